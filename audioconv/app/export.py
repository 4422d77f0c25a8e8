"""Export a trained model, front end included, as one file another program runs: TorchScript
(``torch.jit.trace``; loads in torch and libtorch) or ONNX (onnxruntime and other runtimes).

The exported graph takes waveforms ``"waveform"`` ``(batch, 1, time)`` float32 at the model's sample
rate and returns ``"logits"`` ``(batch, n_classes)``; batch and time are free (time ≥ ``n_fft // 2 + 1``
samples, as the STFT's reflect padding needs). The log-mel front end (STFT, mel filters, dB with
its per-clip ``top_db`` floor) is part of the graph. Each file carries its labels, sample rate and
clip length: TorchScript in the extra file ``audioconv.json``, ONNX in ``metadata_props``.

Why these exporters (torch 2.14): ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript)
exports the front end's complex STFT as ONNX ``STFT`` with free batch and time; the older
TorchScript-based ONNX exporter (``dynamo=False``) refuses it ("STFT does not currently support
complex types"). ``torch.jit.trace`` records the same operations with symbolic sizes, so a traced
model runs at other batch sizes and lengths (checked below); ``torch.jit.script`` would have to
compile torchaudio's and the models' Python (dataclasses, validation) and is not needed. TorchScript
is deprecated in torch 2.14 (``torch.jit.trace``/``load`` warn) but still supported.

Every export is checked: the file is loaded back and run on seeded random waveforms of two batch
sizes and lengths, and its logits compared with the PyTorch model's (:data:`TOLERANCE`).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from audioconv.io.files import atomic_write
from audioconv.training.checkpoint import load_checkpoint, model_from_checkpoint, run_clip_s
from audioconv.utils import eval_mode

__all__ = ["FORMATS", "TOLERANCE", "check_inputs", "trace_torchscript", "save_torchscript", "onnx_bytes",
           "save_onnx", "run_exported", "export_checkpoint"]

FORMATS = ("torchscript", "onnx")
#: Largest ``max |exported - PyTorch|`` accepted, relative to ``max(1, max |logits|)``. The float32
#: forward of the built-in models differs from a float64 one by ~1e-6 of that scale (measured, see
#: tests/test_export.py), and so does onnxruntime's; an export that changes the computation (a
#: frozen length, a missing normalisation, another window) moves logits by far more than 1e-4.
TOLERANCE = 1e-4
_META = "audioconv.json"


def _onnx_modules():
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx.export(dynamo=True) needs it)
    except ModuleNotFoundError as e:
        raise RuntimeError(f"ONNX export needs the {e.name} package: pip install 'audioconv[onnx]'") from None
    return onnx


def check_inputs(model: nn.Module, clip_samples: int, seed: int = 0) -> list[torch.Tensor]:
    """Two seeded batches of white noise at -20 dB re full scale (std 0.1): ``(3, 1, clip_samples)`` and
    ``(2, 1, ~0.73 clip_samples)`` (another batch size and length, to exercise the free axes)."""
    g = torch.Generator().manual_seed(seed)
    shortest = model.frontend.config.n_fft // 2 + 1
    other = max(shortest, int(round(0.73 * clip_samples)))
    return [0.1 * torch.randn(3, 1, clip_samples, generator=g), 0.1 * torch.randn(2, 1, other, generator=g)]


def trace_torchscript(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model`` (eval mode, CPU) on ``example`` ``(B, 1, T)``.

    The tracer's warnings are silenced: they are torch.jit's deprecation notice and Python checks of
    input shapes (``logmel.dim() != 4``) recorded as constants, which hold for any waveform batch;
    :func:`export_checkpoint` checks the traced model on other sizes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with eval_mode(model), torch.no_grad():
            return torch.jit.trace(model, (example,), check_trace=False)


def save_torchscript(traced: torch.jit.ScriptModule, path: str | os.PathLike, metadata: dict) -> Path:
    """Write a traced model atomically, with ``metadata`` as the extra file ``audioconv.json``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.save's deprecation notice
        torch.jit.save(traced, buffer, _extra_files={_META: json.dumps(metadata)})
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())
    return Path(path)


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter's log lines ("torchvision is not installed. Skipping ...") held back."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def onnx_bytes(model: nn.Module, example: torch.Tensor, metadata: dict) -> bytes:
    """The ONNX model (``torch.onnx.export(dynamo=True)``, free batch and time) with ``metadata`` in
    its ``metadata_props``, serialized.

    Raises:
        RuntimeError: onnx or onnxscript is not installed.
        ValueError: the exporter fails on the model (its first line).
    """
    onnx = _onnx_modules()
    shortest = model.frontend.config.n_fft // 2 + 1
    dims = {"waveform": {0: torch.export.Dim("batch"), 2: torch.export.Dim("time", min=shortest)}}
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_exporter(), eval_mode(model):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), None, input_names=["waveform"], output_names=["logits"],
                                        dynamo=True, dynamic_shapes=dims, external_data=False, verbose=False)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"ONNX export of the {type(model).__name__} failed: {type(e).__name__}: {first}") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in metadata.items()})
    return proto.SerializeToString()


def save_onnx(data: bytes, path: str | os.PathLike) -> Path:
    """Write serialized ONNX bytes atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def run_exported(fmt: str, path: str | os.PathLike, x: torch.Tensor) -> torch.Tensor:
    """Logits of the exported file at ``path`` for waveforms ``x`` ``(B, 1, T)``: TorchScript through
    ``torch.jit.load``, ONNX through onnxruntime (CPU).

    Raises:
        RuntimeError: onnxruntime is not installed.
    """
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
        with torch.no_grad():
            return module(x)
    try:
        import onnxruntime
    except ModuleNotFoundError:
        raise RuntimeError("checking an ONNX export needs onnxruntime: pip install 'audioconv[onnx]' "
                           "(or skip the check)") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"waveform": x.numpy()})[0])


def _metadata(ckpt: dict, labels: list[str], model: nn.Module, clip_samples: int) -> dict:
    return {"labels": labels, "sample_rate": int(model.frontend.config.sample_rate), "clip_s": run_clip_s(ckpt),
            "clip_samples": clip_samples, "model_spec": ckpt.get("model_spec", "cnn"),
            "input": "waveform (batch, 1, time) float32", "output": "logits (batch, n_classes)"}


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str, out: str | os.PathLike, check: bool = True,
                      seed: int = 0) -> dict:
    """Export the model of ``checkpoint`` with its front end to ``out`` as ``fmt`` and check it.

    Args:
        checkpoint: ``RUN/best.pt``, ``RUN/last.pt`` or a snapshot.
        fmt: ``"torchscript"`` or ``"onnx"``.
        out: the file to write (atomically).
        check: run the written file on :func:`check_inputs` and compare with the PyTorch model.
        seed: of the check's random waveforms.

    Returns:
        ``{"path", "format", "bytes", "metadata", "checks": [{"shape", "max_abs_diff"}], "max_abs_diff",
        "tolerance"}`` (the last three ``None``/empty without ``check``).

    Raises:
        ValueError: a bad format or checkpoint, an exporter failure, or logits further from the PyTorch
            model's than :data:`TOLERANCE` (the file is written all the same, for inspection).
        RuntimeError: the optional packages the format needs are missing.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model, labels = model_from_checkpoint(ckpt, f"checkpoint {checkpoint}")
    model.eval()
    clip_samples = int(round(run_clip_s(ckpt) * model.frontend.config.sample_rate))
    inputs = check_inputs(model, clip_samples, seed)
    meta = _metadata(ckpt, labels, model, clip_samples)
    if fmt == "torchscript":
        save_torchscript(trace_torchscript(model, inputs[0]), out, meta)
    else:
        save_onnx(onnx_bytes(model, inputs[0], meta), out)
    result = {"path": str(out), "format": fmt, "bytes": Path(out).stat().st_size, "metadata": meta, "checks": [],
              "max_abs_diff": None, "tolerance": None}
    if not check:
        return result
    scale = 1.0
    for x in inputs:
        with torch.no_grad():
            ref = model(x)
        diff = float((run_exported(fmt, out, x) - ref).abs().max())
        scale = max(scale, float(ref.abs().max()))
        result["checks"].append({"shape": list(x.shape), "max_abs_diff": diff})
    result["max_abs_diff"] = max(c["max_abs_diff"] for c in result["checks"])
    result["tolerance"] = TOLERANCE * scale
    if not result["max_abs_diff"] <= result["tolerance"]:
        raise ValueError(f"the exported {fmt} model at {out} differs from the PyTorch model by up to "
                         f"{result['max_abs_diff']:.3g} in the logits (tolerance {result['tolerance']:.3g})")
    return result
