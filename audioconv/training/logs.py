"""A run's logs: ``metrics.jsonl`` and ``metrics.csv`` (one row per epoch, the same columns), and
TensorBoard event files (:class:`TensorBoardLog`, optional package ``tensorboard``).

``metrics.jsonl`` is the record; ``metrics.csv`` is written from it each time, right after it. Both
are replaced atomically (temporary file + rename), so a run killed with SIGKILL leaves each file
whole: at worst the CSV lacks the last row, and the next write (the next epoch, or a resume, which
truncates the record to the epochs of its checkpoint) writes it again from the JSON lines.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from audioconv.io.files import write_text

__all__ = ["read_metric_lines", "append_metrics", "truncate_metrics", "metrics_csv", "TensorBoardLog",
           "require_tensorboard"]


def read_metric_lines(path: Path) -> list[str]:
    """The non-blank lines of ``metrics.jsonl`` (none when it does not exist)."""
    return [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()] if path.exists() else []


def metrics_csv(rows: list[dict]) -> str:
    """CSV text of metrics rows: a header of every key (in first-seen order), one line per row;
    ``None`` is an empty cell, numbers are written exactly (``repr``: ``float(cell)`` gives the value back)."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buf.getvalue()


def _write(out: Path, lines: list[str]) -> None:
    write_text(out / "metrics.jsonl", "".join(s + "\n" for s in lines))
    write_text(out / "metrics.csv", metrics_csv([json.loads(s) for s in lines]))


def append_metrics(out: Path, metrics: dict) -> None:
    """Add one epoch's row to ``out/metrics.jsonl`` and rewrite ``out/metrics.csv`` from it."""
    _write(out, [*read_metric_lines(out / "metrics.jsonl"), json.dumps(metrics)])


def truncate_metrics(out: Path, epochs_done: int) -> None:
    """Keep only the rows of epochs ``<= epochs_done`` in both files (a resumed run rewrites the rest)."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in read_metric_lines(path):
        try:
            if int(json.loads(line)["epoch"]) <= epochs_done:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    _write(out, keep)


# =============================================================================== TensorBoard
def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line ``RuntimeError`` saying how to get it."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError("--tensorboard needs the tensorboard package: pip install 'audioconv[tensorboard]' "
                           "(or leave out --tensorboard; metrics.csv and metrics.jsonl are always written)") from None
    return SummaryWriter


_EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_accuracy", "val_macro_f1", "lr", "clips_per_s")


class TensorBoardLog:
    """TensorBoard event files in ``log_dir``: per optimizer step ``step/train_loss`` and ``step/lr``;
    per epoch ``epoch/<name>`` for the metrics line's losses, accuracies, macro-F1, learning rate
    and clips/s (at the epoch's last step); the model's input (log-mel after augmentation,
    SpecAugment and mixup) of the run's first batch as greyscale images ``input/logmel_<i>``.

    Args:
        log_dir: the folder (``RUN/tensorboard``).
        purge_step: a resumed run's step: events a killed run wrote at or after it are dropped
            (``SummaryWriter(purge_step=...)``), so the curves do not show them twice.

    Raises:
        RuntimeError: the ``tensorboard`` package is missing (one line saying how to install it).
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        writer = require_tensorboard()
        self.writer = writer(log_dir=str(log_dir), purge_step=purge_step or None)

    def step(self, step: int, train_loss: float, lr: float) -> None:
        """One optimizer step (``step`` = steps done, 1-based): its mean loss (nats) and learning rate."""
        self.writer.add_scalar("step/train_loss", train_loss, step)
        self.writer.add_scalar("step/lr", lr, step)

    def epoch(self, metrics: dict) -> None:
        """One metrics line (as in ``metrics.jsonl``), at its ``step``; ``None`` values are left out."""
        for name in _EPOCH_SCALARS:
            if metrics.get(name) is not None:
                self.writer.add_scalar(f"epoch/{name}", metrics[name], metrics["step"])
        self.writer.flush()

    def inputs(self, spec: torch.Tensor, step: int, n: int = 4) -> None:
        """The first ``n`` log-mel inputs ``(B, 1, F, T')`` as images, low frequencies at the bottom,
        each scaled from its own minimum (black) to maximum (white)."""
        for i, image in enumerate(spectrogram_images(spec[:n])):
            self.writer.add_image(f"input/logmel_{i}", image, step, dataformats="CHW")

    def close(self) -> None:
        self.writer.close()


def spectrogram_images(spec: torch.Tensor) -> torch.Tensor:
    """``(B, 1, F, T')`` log-mel → ``(B, 1, F, T')`` float in [0, 1] on the CPU: each map scaled from
    its minimum to its maximum (a constant map is 0), the frequency axis flipped (row 0 = highest band)."""
    x = spec.detach().float().cpu().flip(-2)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    span = x.amax(dim=(1, 2, 3), keepdim=True) - low
    return torch.where(span > 0, (x - low) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))
