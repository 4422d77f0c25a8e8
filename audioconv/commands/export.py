"""`audioconv export`: a checkpoint's model with its log-mel front end as one TorchScript or ONNX file."""
from __future__ import annotations

import json

EPILOG = """examples:
  audioconv export --checkpoint runs/kws/best.pt --format onnx -o kws.onnx
  audioconv export --checkpoint runs/kws/best.pt --format torchscript -o kws.pt
The file takes waveforms "waveform" (batch, 1, time) float32 at the model's sample rate and gives
"logits" (batch, n_classes); batch and time are free. Labels, sample rate and clip length travel in
the file (ONNX metadata_props; TorchScript extra file audioconv.json). ONNX needs the extra
'audioconv[onnx]' (onnx, onnxscript, onnxruntime for the check).
"""


def register(subparsers) -> None:
    import argparse

    p = subparsers.add_parser("export", help="export a model with its front end to TorchScript or ONNX",
                              description=__doc__.split("\n")[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="RUN/best.pt, RUN/last.pt or a snapshot")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--no-check", action="store_true",
                   help="do not run the file against the PyTorch model on random waveforms")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from audioconv.app.export import export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, check=not args.no_check)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    meta = result["metadata"]
    print(f"wrote {result['path']} ({args.format}, {result['bytes'] / 1e6:.2f} MB): waveform (batch, 1, time) at "
          f"{meta['sample_rate']} Hz -> logits (batch, {len(meta['labels'])})")
    if result["checks"]:
        shapes = ", ".join("x".join(map(str, c["shape"])) for c in result["checks"])
        print(f"checked against PyTorch on random waveforms {shapes}: max |logit difference| "
              f"{result['max_abs_diff']:.2e} (tolerance {result['tolerance']:.1e})")
    return 0
