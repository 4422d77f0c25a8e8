#!/usr/bin/env python3
"""Time the deconv projector against Captum, side by side in the same run.

Task: 64 units (all channels) of ``conv2`` of the package's default SpectrogramCNN
(channels 32-64-128-128, random init, eval), position "max", a batch of 8 one-second 16 kHz clips
(log-mel 64 × 101, computed once and shared by every contestant)::

    python benchmarks/project_bench.py [--batch 8] [--units 64] [--layer conv2] [--repeats 3] [--device cpu]

Residual case (``--model resnet``): a ResNet-18-style audio network on the same log-mel inputs —
a 3×3 stem (64 channels), BatchNorm, ReLU, 2×2 max-pool, then stages of two basic blocks (conv-BN-ReLU-
conv-BN, ``out += shortcut``, ReLU; a strided 1×1-conv shortcut where the shape changes) of
``--widths`` channels (default 64,128,256), global average pool, linear — and a layer named by its
module path::

    python benchmarks/project_bench.py --model resnet --layer layer1.1.relu2 --topk-clips 0
    python benchmarks/project_bench.py --model resnet --layer layer2.1.relu2 --topk-clips 0

The package's BC-ResNet (``--model bcresnet``, BC-ResNet-8: 64 channels in ``stage1``). Its temporal
branch uses SiLU, for which Captum has no deconv/guided rule (it silently takes the gradient there),
so compare in ``--mode gradient``; ``deconv`` is timed all the same (the agreement column then shows
the difference of the two rules)::

    python benchmarks/project_bench.py --model bcresnet --layer stage1 --mode gradient --topk-clips 0

Contestants (all produce the same 8 × 64 maps; the script checks that they agree):

* ``audioconv`` — :class:`audioconv.interpret.Projector` (one forward per input, all units batched,
  receptive-field crops), and the same with ``crop=False`` (full-plane backward) for reference;
* ``captum per unit`` — ``NeuronDeconvolution.attribute`` (``--mode``: or ``NeuronGuidedBackprop`` /
  ``NeuronGradient``) once per unit on the batch of 8, with a
  callable ``neuron_selector`` that picks each example's own max position of that unit (the
  fairest use of Captum: one call per unit, not per unit × example). The max positions come from
  one forward pass, included in its time;
* ``replicate`` — the "replicate the batch K times" trick: one Captum call on the 8 × 64 replicas,
  each replica's selector picking its own unit and position (one forward + one backward of the
  whole network on 512 inputs).

Also timed (not compared with Captum): ``top_k`` of ``--topk-units`` units of the layer over
``--topk-clips`` one-second clips (k = 9; the scan and then the projections, chunk by chunk).

``--model-device`` puts the caller's model somewhere else than ``--device`` (e.g. ``--device cuda
--model-device cpu``): the projector then works on a copy on ``--device``, made once per projector
(before issue 10: once per call, i.e. per top-k chunk).

Prints wall and CPU times (best of ``--repeats`` rounds, contestants interleaved so a busy machine
slows them alike) and the speed-ups. Run it on another checkout of the package with
``PYTHONPATH=<checkout> python benchmarks/project_bench.py`` to compare versions.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _residual import BasicBlock  # noqa: E402  (the tests' ResNet basic block: one definition)
from _tiny_cnn import Classify  # noqa: E402  (and their model.classify wrapper)


class AudioResNet(nn.Module):
    """ResNet-18-style stages on log-mel ``(B, 1, F, T)`` (module docstring)."""

    def __init__(self, widths=(64, 128, 256), n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(2))
        c = widths[0]
        for i, w in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c, w, 1 if i == 1 else 2), BasicBlock(w, w)))
            c = w
        self.n_stages = len(widths)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes))

    def forward(self, x):
        x = self.stem(x)
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.head(x)




def _timed(fn):
    """(wall s, CPU s of this process, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0, out


def _interleaved(contestants: dict, repeats: int):
    """Run the contestants in turn, ``repeats`` rounds, so a busy machine slows them alike.

    Returns {name: (best wall s, best CPU s, result)}.
    """
    best = {}
    for _ in range(repeats):
        for name, fn in contestants.items():
            wall, cpu, out = _timed(fn)
            old = best.get(name)
            best[name] = (min(wall, old[0]) if old else wall, min(cpu, old[1]) if old else cpu, out)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--layer", default=None, help="default conv2 (cnn), layer1.1.relu2 (resnet)")
    ap.add_argument("--model", default="cnn", choices=["cnn", "resnet", "bcresnet"],
                    help="the package's SpectrogramCNN, the residual AudioResNet (module docstring) or the "
                         "package's BCResNet (--width, default 8: BC-ResNet-8, 64 channels in stage1)")
    ap.add_argument("--mode", default="deconv", choices=["deconv", "guided", "gradient"],
                    help="projection rule (Captum's NeuronDeconvolution / NeuronGuidedBackprop / NeuronGradient)")
    ap.add_argument("--widths", default="64,128,256", help="AudioResNet stage widths")
    ap.add_argument("--width", type=float, default=8.0, help="BCResNet width (8: BC-ResNet-8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-replicate", action="store_true", help="skip the replicate baseline (memory)")
    ap.add_argument("--no-full", action="store_true", help="skip the crop=False run of the projector")
    ap.add_argument("--model-device", default=None, help="where the caller's model lives (default: --device)")
    ap.add_argument("--topk-clips", type=int, default=64, help="clips of the top_k timing (0: skip it)")
    ap.add_argument("--topk-units", type=int, default=16)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is steadier "
                                                           "on a busy machine")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop

    from audioconv.models.bcresnet import BCResNet
    from audioconv.models.spectrogram_cnn import SpectrogramCNN
    from audioconv.interpret import Projector, top_k

    torch.manual_seed(0)
    dev = torch.device(args.device)
    home = torch.device(args.model_device or args.device)
    args.layer = args.layer or {"cnn": "conv2", "resnet": "layer1.1.relu2", "bcresnet": "stage1"}[args.model]
    cnn = SpectrogramCNN(n_classes=10).to(dev).eval()
    wav = torch.randn(args.batch, 1, 16000, device=dev) * 0.1
    with torch.no_grad():
        x = cnn.frontend(wav)  # (B, 1, 64, 101)

    def build():
        torch.manual_seed(0)
        if args.model == "cnn":
            return SpectrogramCNN(n_classes=10).eval()
        if args.model == "bcresnet":
            return BCResNet(n_classes=10, width=args.width).eval()
        return AudioResNet(tuple(int(w) for w in args.widths.split(","))).eval()

    model = build().to(dev)
    units = list(range(args.units))
    if args.model != "resnet":
        modules = dict(model.named_modules())
        act_module = model.feature_module(args.layer) if args.layer in model.layer_names else modules[args.layer]
        wrapped = Classify(model)
    else:
        act_module, wrapped = dict(model.named_modules())[args.layer], model
    B, K = x.shape[0], len(units)
    clips = [w for w in torch.randn(args.topk_clips, 1, 16000, generator=torch.Generator().manual_seed(1)) * 0.1]
    if args.model == "resnet":
        with torch.no_grad():  # a model without front end scans log-mel items
            clips = [c for c in cnn.frontend(torch.stack(clips))[:, 0]] if clips else []
    caller_model = model if home == dev else build()
    if caller_model is not model:
        caller_model.load_state_dict(model.state_dict())
        caller_model.to(home)

    projector = Projector(caller_model, args.mode, device=dev)
    project = lambda crop: projector.project(x, args.layer, units, "max", progress=False, crop=crop)  # noqa: E731
    project(True)  # warm-up

    captum_cls = {"deconv": NeuronDeconvolution, "guided": NeuronGuidedBackprop, "gradient": NeuronGradient}[args.mode]
    deconv = captum_cls(wrapped, act_module)
    bi = torch.arange(B, device=dev)

    def captum_per_unit():
        with torch.no_grad():
            fm = projector.feature_maps(x, args.layer)
        maps = torch.empty(B, K, *x.shape[-2:], device=dev)
        for k, c in enumerate(units):
            flat = fm[:, c].flatten(1).argmax(1)
            f, t = flat // fm.shape[-1], flat % fm.shape[-1]
            attr = deconv.attribute(x, neuron_selector=lambda out, c=c, f=f, t=t: out[bi, c, f, t])
            maps[:, k] = attr[:, 0] * fm[bi, c, f, t][:, None, None]
        return maps

    def replicate():
        with torch.no_grad():
            fm = projector.feature_maps(x, args.layer)
        sel = fm[:, units].flatten(2)
        flat = sel.argmax(-1)  # (B, K)
        f, t = (flat // fm.shape[-1]).reshape(-1), (flat % fm.shape[-1]).reshape(-1)
        ch = torch.tensor(units, device=dev).repeat(B)
        xr = x.repeat_interleave(K, dim=0)  # (B*K, 1, F, T): example b's replicas are rows b*K ... b*K+K-1
        ri = torch.arange(B * K, device=dev)
        attr = deconv.attribute(xr, neuron_selector=lambda out: out[ri, ch, f, t])
        acts = sel.gather(-1, flat.unsqueeze(-1)).reshape(-1)
        return (attr[:, 0] * acts[:, None, None]).view(B, K, *x.shape[-2:])

    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    contestants = {"ours": lambda: project(True), "captum": captum_per_unit}
    if not args.no_full:
        contestants["ours_full"] = lambda: project(False)
    if not args.no_replicate:
        contestants["replicate"] = replicate
    if args.topk_clips:
        contestants["topk"] = lambda: top_k(caller_model, clips, args.layer, list(range(args.topk_units)), k=9,
                                            batch_size=16, device=dev, mode=args.mode, progress=False)
    res = _interleaved(contestants, args.repeats)
    ours = res["ours"][2]

    def rel(a, b):
        return float((a.cpu() - b.cpu()).abs().max() / b.abs().max().clamp_min(1e-30))

    def line(label, name, ref=None):
        wall, cpu, out = res[name]
        diff = "" if ref is None else f"   max rel diff vs ours {rel(ref(out), ours.maps):.1e}"
        print(f"{label:34s}{wall * 1e3:10.1f} ms wall {cpu * 1e3:10.1f} ms CPU{diff}")

    name = {"cnn": "SpectrogramCNN", "resnet": f"AudioResNet({args.widths})",
            "bcresnet": f"BCResNet(width={args.width:g})"}[args.model]
    print(f"model={name} device={dev} model on {home} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"repeats={args.repeats} (best of, interleaved)")
    print(f"task: {K} units of {args.layer}, position=max, batch {B} x log-mel {tuple(x.shape[-2:])}, mode {args.mode}")
    line("audioconv Projector (crop)", "ours")
    if "ours_full" in res:
        line("audioconv Projector (crop=False)", "ours_full", lambda p: p.maps)
    line("captum, one call per unit", "captum", lambda m: m)
    if not args.no_replicate:
        line("replicate batch K times (captum)", "replicate", lambda m: m)
    if "topk" in res:
        line(f"top_k: {args.topk_units} units, k=9, {args.topk_clips} clips", "topk")
    for name, label in (("captum", "captum per unit"), ("replicate", "replicate")):
        if name in res:
            full = f"   (crop=False: {res[name][0] / res['ours_full'][0]:.1f}x wall)" if "ours_full" in res else ""
            print(f"speed-up vs {label:16s} {res[name][0] / res['ours'][0]:7.1f}x wall "
                  f"{res[name][1] / res['ours'][1]:7.1f}x CPU{full}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
