"""`audioconv train`: train a log-mel CNN from manifests (one process, or several under torchrun)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from audioconv.commands._args import comma_list

EPILOG = """examples:
  audioconv train --train kws_train.jsonl --val kws_validation.jsonl --out runs/kws
  audioconv train --manifest kws.jsonl --out runs/kws            # splits "train" / "validation"
  audioconv train --manifest esc50.jsonl --train-split fold1,fold2,fold3,fold4 --val-split fold5 --out runs/esc
  audioconv train --out runs/kws --resume                          # continue runs/kws/last.pt
  audioconv train --train T.jsonl --val V.jsonl --out RUN --ema 0.999 --mixup 0.2 --early-stopping 5 --tensorboard
  torchrun --standalone --nproc_per_node=2 -m audioconv train --train T.jsonl --val V.jsonl --out RUN
multi-node: run on every node
  torchrun --nnodes=N --nproc_per_node=G --node_rank=I --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
           -m audioconv train ... --out /shared/RUN
"""

# argparse dest -> TrainConfig field, for options given on the command line (None = not given)
_FIELDS = ("train", "val", "manifest", "train_split", "val_split", "out", "epochs", "batch_size", "lr", "weight_decay", "schedule", "augment",
           "device", "amp", "workers", "threads", "seed", "clip_s", "sample_rate", "channels", "n_mels", "f_max_hz", "dropout",
           "activation", "specaugment", "freq_warp", "n_freq_masks", "freq_mask_bins", "n_time_masks",
           "time_mask_frames", "label_smoothing", "checkpoint_every_steps", "best_metric",
           "skip_bad", "deterministic", "overwrite", "model", "width", "shuffle_buffer", "normalize")
_EXTRA_FIELDS = ("ema", "mixup", "early_stopping", "tensorboard")


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(c) for c in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channels must be a comma list of integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"--channels must be positive integers, got {text!r}")
    return values


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a log-mel CNN classifier from manifests",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    p.set_defaults(func=run)


def add_options(p: argparse.ArgumentParser) -> None:
    """The training options (shared with ``audioconv cv``); unset options are ``None``."""
    from audioconv.training.config import BEST_METRICS, TrainConfig

    d = TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--train", help="training manifest (JSONL), or WebDataset shards written by `audioconv shards`: "
                                      "'DIR/train-{000000..000123}.tar'")
    data.add_argument("--val", help="validation manifest (JSONL), or shards when --train names shards; optional")
    data.add_argument("--manifest", help="one manifest whose 'split' key says train / validation (instead of --train/--val)")
    data.add_argument("--train-split", help="with --manifest: the split(s) to train on, comma list (default train)")
    data.add_argument("--val-split", help="with --manifest: the split(s) to validate on, comma list, or none "
                                          "(default validation)")
    data.add_argument("--out", help=f"run folder (default {d.out})")
    data.add_argument("--clip-s", type=float, help=f"clip length in seconds, crop or zero-pad (default {d.clip_s})")
    data.add_argument("--sample-rate", type=int, help=f"Hz; clips are resampled (default {d.sample_rate})")
    data.add_argument("--shuffle-buffer", type=int, help=f"shards: clips each DataLoader worker holds to shuffle "
                      f"its stream (default {d.shuffle_buffer})")
    data.add_argument("--skip-bad", action="store_true", default=None, help="skip unreadable clips (counted) instead of stopping")
    model = p.add_argument_group("model")
    model.add_argument("--model", metavar="SPEC",
                       help="cnn (default), bcresnet, or package.module:factory: called with n_classes=, sample_rate= "
                            "(and width= with --width); returns a model with frontend/classify or a backbone "
                            "taking log-mel (B, 1, F, T), which gets the log-mel front end")
    model.add_argument("--width", type=float, help="size multiplier: bcresnet BC-ResNet-W (1 ~9k, 8 ~320k parameters; "
                       "default 1), cnn channels x W, a factory's width=")
    model.add_argument("--channels", type=_channels,
                       help=f"cnn: conv channels per block (default {','.join(map(str, d.channels))})")
    model.add_argument("--n-mels", type=int, help=f"log-mel bins (default {d.n_mels})")
    model.add_argument("--f-max-hz", type=float, metavar="HZ",
                       help="top of the highest log-mel band in Hz (default: the Nyquist frequency, sample_rate / 2)")
    model.add_argument("--normalize", choices=["none", "clip", "bin_mean", "bin_mean_var", "pcen"],
                       help=f"per-example log-mel normalisation: per clip, per mel bin (mean, or mean and "
                            f"variance over time), pcen (per-channel energy normalisation, librosa.pcen's "
                            f"constants) or none (default {d.normalize})")
    model.add_argument("--dropout", type=float,
                       help=f"cnn: before the head; bcresnet: on each block's temporal feature (default {d.dropout})")
    model.add_argument("--activation", choices=["relu", "leaky_relu", "tanh"], help=f"cnn (default {d.activation})")
    aug = p.add_argument_group("augmentation")
    aug.add_argument("--augment", help="'default', 'none' or a chain JSON file (default 'default')")
    aug.add_argument("--specaugment", action=argparse.BooleanOptionalAction, default=None,
                     help="time/frequency masks on the log-mel (default on)")
    aug.add_argument("--freq-warp", type=float, help="with SpecAugment, scale each example's frequency axis by "
                     f"U[1-w, 1+w] (VTLP; default {d.freq_warp}, 0 = off)")
    aug.add_argument("--freq-masks", type=int, dest="n_freq_masks", metavar="N",
                     help=f"SpecAugment frequency masks per example (default {d.n_freq_masks})")
    aug.add_argument("--freq-mask-bins", type=int, metavar="BINS",
                     help=f"widest frequency mask, in mel bins (default {d.freq_mask_bins})")
    aug.add_argument("--time-masks", type=int, dest="n_time_masks", metavar="N",
                     help=f"SpecAugment time masks per example (default {d.n_time_masks})")
    aug.add_argument("--time-mask-frames", type=int, metavar="FRAMES",
                     help=f"widest time mask, in frames (default {d.time_mask_frames})")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, help=f"(default {d.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"clips per step and process (default {d.batch_size})")
    opt.add_argument("--lr", type=float, help=f"peak learning rate, AdamW (default {d.lr})")
    opt.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    opt.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], help=f"(default {d.schedule})")
    opt.add_argument("--label-smoothing", type=float, help=f"(default {d.label_smoothing})")
    system = p.add_argument_group("system")
    system.add_argument("--device", help="auto (CUDA if available), cpu, cuda (default auto)")
    system.add_argument("--amp", choices=["auto", "none", "bf16", "fp16"],
                        help="mixed precision: auto = bf16 on CUDA, none on CPU; fp16 uses a grad scaler")
    system.add_argument("--workers", type=int, help="DataLoader decode processes (default auto)")
    system.add_argument("--threads", type=int, help="torch CPU threads (default cores / local processes)")
    system.add_argument("--seed", type=int, help=f"(default {d.seed})")
    system.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels only")
    system.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt with OUT/config.json's settings; of the other options only "
                             "--epochs, --early-stopping, --device, --workers, --threads, --checkpoint-every-steps, "
                             "--tensorboard may change them")
    system.add_argument("--overwrite", action="store_true", default=None,
                        help="replace the checkpoints and metrics of an earlier run in OUT")
    system.add_argument("--checkpoint-every-steps", type=int, help="also write last.pt every N steps (default 0 = epoch ends)")
    system.add_argument("--best-metric", choices=BEST_METRICS,
                        help=f"what picks best.pt and early stopping (default {d.best_metric})")
    system.add_argument("--no-progress", action="store_true", help="no progress bars")
    system.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_extra_options(p)


def _add_extra_options(p: argparse.ArgumentParser) -> None:
    """Weight averaging, mixup, early stopping, TensorBoard (all off by default)."""
    extra = p.add_argument_group("averaging, mixup, early stopping, logs")
    extra.add_argument("--ema", type=float, metavar="DECAY",
                       help="keep an exponential moving average of the weights (e.g. 0.999: about the last 1000 "
                            "steps; 0.99 for runs under ~5000 steps); validation, best.pt and snapshots use it "
                            "(last.pt keeps both); default off")
    extra.add_argument("--mixup", type=float, metavar="ALPHA",
                       help="mixup of the log-mel inputs and their labels, weights ~ Beta(ALPHA, ALPHA) per example "
                            "(e.g. 0.2); default off")
    extra.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop when --best-metric has not improved for PATIENCE epochs (needs validation); "
                            "default off")
    extra.add_argument("--tensorboard", action="store_true", default=None,
                       help="also log to OUT/tensorboard (pip install 'audioconv[tensorboard]')")


def config_from_args(args):
    """TrainConfig from parsed args: defaults, then OUT/config.json when resuming, then the options given."""
    from audioconv.training.config import LEGACY_DEFAULTS, TrainConfig

    base = TrainConfig().to_dict()
    given = {name: getattr(args, name) for name in _FIELDS + _EXTRA_FIELDS if getattr(args, name, None) is not None}
    if args.resume:
        base.update({**LEGACY_DEFAULTS, **_saved_config(args.out)})
        _refuse_changed_settings(base, given, Path(args.out) / "config.json")
    if "manifest" in given:
        base.update(train=None, val=None)
    if "train" in given or "val" in given:
        base.update(manifest=None)
    base.update(given)
    base["resume"] = bool(args.resume)
    return TrainConfig.from_dict(base)


# settings a resumed run may change: how long it runs, where and how fast, what it logs
RESUME_MAY_CHANGE = ("epochs", "early_stopping", "device", "workers", "threads", "checkpoint_every_steps",
                     "tensorboard")


def _refuse_changed_settings(saved: dict, given: dict, where: Path) -> None:
    """With --resume the settings are the run's own: refuse (one line) options that would change
    any but :data:`RESUME_MAY_CHANGE`, rather than quietly train the rest of the run otherwise."""
    from audioconv.training.config import TrainConfig

    before = TrainConfig.from_dict(saved).to_dict()
    after = TrainConfig.from_dict({**saved, **given}).to_dict()
    for settings in (before, after):  # no top given is the Nyquist frequency: the same bands
        if settings.get("f_max_hz") is None:
            settings["f_max_hz"] = settings["sample_rate"] / 2
    changed = [f"--{name.replace('_', '-')} {_shown(after[name])} (was {_shown(before[name])})"
               for name in given if name not in (*RESUME_MAY_CHANGE, "out") and not _same(name, after[name], before[name])]
    if changed:
        raise ValueError(f"--resume continues the run with the settings in {where}; these options would change "
                         f"them: {'; '.join(changed)} (only --{', --'.join(n.replace('_', '-') for n in RESUME_MAY_CHANGE)} "
                         f"may change on resume; start a new run in another --out to change the rest)")


def _same(name: str, a, b) -> bool:
    """Whether a setting is unchanged; the data paths (shard lists part by part) and a chain file
    ``augment`` compare as files (``m.jsonl`` = ``./m.jsonl`` = absolute)."""
    from audioconv.training.config import is_chain_file

    files = name in ("train", "val", "manifest") or (name == "augment" and is_chain_file(a) and is_chain_file(b))
    if files and isinstance(a, str) and isinstance(b, str):
        return [Path(p.strip()).resolve() for p in a.split("::")] == [Path(p.strip()).resolve() for p in b.split("::")]
    return a == b


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _saved_config(out: str | None) -> dict:
    """The settings of the run to resume: OUT/config.json, else the ones stored in OUT/last.pt."""
    from audioconv.training.checkpoint import load_checkpoint

    if not out:
        raise ValueError("--resume needs --out RUN (the folder holding last.pt and config.json)")
    last, saved = Path(out) / "last.pt", Path(out) / "config.json"
    if not last.is_file():
        hint = (" (the run stopped before its first checkpoint: start it again with --overwrite instead of --resume)"
                if saved.is_file() else "")
        raise FileNotFoundError(f"--resume: there is no run to resume at {last}{hint}")
    if saved.is_file():
        try:
            config = json.loads(saved.read_text(encoding="utf-8"))["train_config"]
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"--resume: {saved} is not a run's config.json (no train_config)") from None
    else:
        config = load_checkpoint(last).get("train_config") or {}
    return config


def run(args) -> int:
    from audioconv.commands._skipped import skipped_lines
    from audioconv.training import distributed
    from audioconv.training.loop import fit

    config = config_from_args(args)
    summary = fit(config, progress=not args.no_progress,
                  log=lambda note: print(f"audioconv train: {note}", file=sys.stderr, flush=True))
    if not distributed.detect().is_main:  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    final = summary["final"] or {}
    print(f"trained {summary['epochs']} epochs ({summary['steps']} steps) in {summary['time_s']:.0f} s "
          f"on {summary['device']} x{summary['world_size']}")
    if final.get("val_accuracy") is not None:
        print(f"last epoch: val accuracy {final['val_accuracy']:.4f}, val macro-F1 {final['val_macro_f1']:.4f}, "
              f"train loss {final['train_loss']:.4f}, {final['clips_per_s']:.0f} clips/s")
        weights = " of the EMA weights" if summary.get("weights") == "ema" else ""
        print(f"best: epoch {summary['best_epoch']} ({summary['best_metric']} {summary['best_value']:.4f}{weights})")
    if summary.get("stopped_early"):
        print(summary["stopped_early"]["note"])
    for name, part in summary["data"].items():  # what --skip-bad left out, once
        for line in skipped_lines(name, part["skipped"], part["clips"]):
            print(line)
    if final.get("val_clips") is not None and final["val_clips"] < summary["data"]["validation"]["clips"]:
        print(f"validation scored {final['val_clips']} of {summary['data']['validation']['clips']} clips")
    out = Path(summary["out"])
    tensorboard = f"; tensorboard --logdir {out / 'tensorboard'}" if config.tensorboard else ""
    print(f"checkpoints: {summary['best_checkpoint']} (best), {summary['last_checkpoint']} (last); "
          f"metrics: {out / 'metrics.jsonl'}, {out / 'metrics.csv'}{tensorboard}")
    sys.stdout.flush()
    return 0
