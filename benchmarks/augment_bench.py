"""Clips per second of the augmentation chain against its peers, in one run.

Chain: polarity inversion (p .5) + EQ (p .8) + reverb (p .5) + white noise at 5–40 dB SNR (p .8)
on a batch of 256 one-second clips at 16 kHz (change with flags), on the CPU and, when there is
one, on CUDA.

* audioconv — one batched call; RandomEQ with 5 peaks + 2 shelves (7 biquads, like the peer's
  seven-band EQ), synthetic RIRs with RT60 0.2–1.0 s.
* audiomentations — the same chain one example at a time (its only mode): PolarityInversion,
  SevenBandParametricEQ (±12 dB), ApplyImpulseResponse over 32 RIR files (synthetic, RT60
  0.2–1.0 s, written to a temp folder; RoomSimulator would need pyroomacoustics and simulates a
  room per call), AddGaussianSNR.
* torch-audiomentations — batched, per-example mode: PolarityInversion, ApplyImpulseResponse
  (same files; its loader calls torchaudio.load/info, gone since torchaudio 2.9, so this script
  stands in soundfile for them; it reads the files again for every batch), AddColoredNoise with
  f_decay 0 (white). It has no EQ, so its chain is one step shorter than the others.

Peers that are not installed are skipped (``pip install audiomentations torch-audiomentations``).
``--transforms`` times instead each transform on its own (p = 1, the same batch) against the nearest
transform of each peer, in the same run (``benchmarks/augment_transforms.py``; codecs in DataLoader
workers: ``--codec-workers``). ``--against REV ...`` times this version's chains against earlier git
revisions of ``audioconv/augment`` in one process (``benchmarks/augment_history.py``).
``--ablation`` times instead what the chains' in-place writes earn (``audioconv.augment.base.CHAIN_IN_PLACE``
on and off; same params, equal outputs) for the default training chain and this chain, with and
without ``lengths`` (a third of the clips padded).
Run: ``python benchmarks/augment_bench.py [--batch 256] [--repeats 5] [--threads 1] [--ablation]``. The
runners take turns within each repeat, so a change of machine load hits them alike. Besides
wall-clock clips/s it prints clips per CPU-second of this process (all its threads), which a
busy machine disturbs less; on a shared machine compare with ``--threads 1`` (with more torch
threads than free cores, OpenMP's spin-waiting dominates; ``OMP_WAIT_POLICY=PASSIVE`` helps).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import soundfile as sf
import torch

from audioconv.augment import AddNoise, Compose, PolarityInversion, RandomEQ, Reverb, default_chain, synthetic_rir
from audioconv.augment import base as augment_base

SNR_DB = (5.0, 40.0)
RT60_S = (0.2, 1.0)
N_RIRS = 32


def make_batch(batch: int, samples: int, sample_rate: int) -> torch.Tensor:
    """Deterministic speech-like test signal: noise bursts under a syllable-rate envelope."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / sample_rate
    envelope = 0.5 * (1 + torch.sin(2 * torch.pi * 4 * t + torch.rand(batch, 1, generator=g) * 6.28))
    return (0.1 * torch.randn(batch, 1, samples, generator=g) * envelope[:, None, :]).float()


def write_rirs(folder: Path, sample_rate: int) -> list[Path]:
    g = torch.Generator().manual_seed(1)
    rt60 = torch.rand(N_RIRS, generator=g, dtype=torch.float64) * (RT60_S[1] - RT60_S[0]) + RT60_S[0]
    paths = []
    for i, r in enumerate(rt60.tolist()):
        rir = synthetic_rir(r, sample_rate, drr_db=6.0, generator=g)
        paths.append(folder / f"rir_{i:02d}.wav")
        sf.write(paths[-1], (0.9 * rir).numpy(), sample_rate, subtype="FLOAT")
    return paths


def bench_chain(sample_rate: int) -> Compose:
    return Compose([
        PolarityInversion(p=0.5),
        RandomEQ(sample_rate, n_bands=5, shelves=True, gain_db=(-12, 12), p=0.8),
        Reverb(sample_rate, rt60_s=RT60_S, p=0.5),
        AddNoise(snr_db=SNR_DB, color="white", p=0.8),
    ])


def ours(x: torch.Tensor, sample_rate: int, rir_dir: Path):
    chain = bench_chain(sample_rate)
    g = torch.Generator().manual_seed(0)
    return lambda: chain(x, generator=g)


def audiomentations_chain(x: torch.Tensor, sample_rate: int, rir_dir: Path):
    import audiomentations as am

    chain = am.Compose([
        am.PolarityInversion(p=0.5),
        am.SevenBandParametricEQ(min_gain_db=-12.0, max_gain_db=12.0, p=0.8),
        am.ApplyImpulseResponse(ir_path=str(rir_dir), p=0.5, leave_length_unchanged=True),
        am.AddGaussianSNR(min_snr_db=SNR_DB[0], max_snr_db=SNR_DB[1], p=0.8),
    ])
    clips = x[:, 0].numpy()
    for path in sorted(rir_dir.iterdir()):  # fill its IR cache first, as a long run would
        chain.transforms[2]._ApplyImpulseResponse__load_ir(str(path), sample_rate, mono=True)
    return lambda: [chain(samples=c, sample_rate=sample_rate) for c in clips]


def _soundfile_torchaudio_shims():
    """torch-audiomentations reads files with torchaudio.load/info (need torchcodec since 2.9)."""
    import torchaudio

    def info(path):
        i = sf.info(path)
        return SimpleNamespace(num_frames=i.frames, sample_rate=i.samplerate)

    def load(path, frame_offset=0, num_frames=-1, **_):
        data, sr = sf.read(path, start=frame_offset, frames=num_frames, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr

    torchaudio.info, torchaudio.load = info, load


def torch_audiomentations_chain(x: torch.Tensor, sample_rate: int, rir_dir: Path):
    import torch_audiomentations as ta

    _soundfile_torchaudio_shims()
    chain = ta.Compose([
        ta.PolarityInversion(p=0.5, mode="per_example", output_type="tensor"),
        ta.ApplyImpulseResponse(ir_paths=str(rir_dir), p=0.5, mode="per_example", sample_rate=sample_rate,
                                compensate_for_propagation_delay=True, output_type="tensor"),
        ta.AddColoredNoise(min_snr_in_db=SNR_DB[0], max_snr_in_db=SNR_DB[1], min_f_decay=0.0, max_f_decay=0.0,
                           p=0.8, mode="per_example", sample_rate=sample_rate, output_type="tensor"),
    ], output_type="tensor")
    return lambda: chain(x, sample_rate=sample_rate)


def time_interleaved(runs: dict, repeats: int, device: str, separate: bool = False) -> dict:
    """Median wall-clock and CPU seconds (all threads of this process) per call of each runner;
    the runners take turns, so a change of machine load hits them alike. With ``separate`` each
    runner makes all its calls in one block instead (its buffers are then not interleaved with
    the other runners' allocations; for an idle machine)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = {name: ([], []) for name in runs}
    order = [(name, run) for name, run in runs.items() for _ in range(repeats + 1)] if separate else \
        [(name, run) for _ in range(repeats + 1) for name, run in runs.items()]
    for name, run in order:  # each runner's first call warms up
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        sync()
        times[name][0].append(time.perf_counter() - wall)
        times[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w[1:]), statistics.median(c[1:])) for name, (w, c) in times.items()}


def in_place_ablation(x: torch.Tensor, sample_rate: int, repeats: int) -> None:
    """Median CPU time per call of each chain with and without the chains' in-place writes."""
    g = torch.Generator().manual_seed(2)
    padded = torch.full((x.shape[0],), x.shape[-1])
    padded[::3] = torch.randint(x.shape[-1] // 2, x.shape[-1], padded[::3].shape, generator=g)
    print(f"{'':36} in place   out of place   in place earns")
    for name, chain in (("default chain", default_chain(sample_rate)), ("this chain", bench_chain(sample_rate))):
        params = chain.sample(x.shape[0], torch.Generator().manual_seed(1))
        for lengths in (None, padded):
            def run(in_place: bool, lengths=lengths):
                augment_base.CHAIN_IN_PLACE = in_place
                try:
                    return chain.apply(x, params, lengths)
                finally:
                    augment_base.CHAIN_IN_PLACE = True

            if not torch.equal(run(True), run(False)):
                raise AssertionError(f"{name}: in-place and out-of-place outputs differ")
            timings = time_interleaved({"on": lambda: run(True), "off": lambda: run(False)}, repeats, x.device.type)
            on, off = timings["on"][1] * 1e3, timings["off"][1] * 1e3
            label = f"{name}, lengths {'none' if lengths is None else 'given'}"
            print(f"  {label:34} {on:6.1f} ms   {off:6.1f} ms      {off / on - 1:+6.1%}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 = one core, like audiomentations)")
    parser.add_argument("--ablation", action="store_true",
                        help="time the chains with and without their in-place writes instead of the peers (CPU)")
    parser.add_argument("--transforms", action="store_true",
                        help="time each transform on its own against the peers' nearest one (CPU), and the codecs "
                             "in DataLoader workers")
    parser.add_argument("--only", default=None, help="with --transforms: comma-separated names of the rows to run")
    parser.add_argument("--codec-workers", type=int, default=2, help="with --transforms: DataLoader workers (default 2)")
    parser.add_argument("--separate", action="store_true",
                        help="with --transforms: each runner's calls in one block, not in turns (idle machine)")
    parser.add_argument("--against", nargs="+", metavar="REV",
                        help="time this version's chains against these git revisions of audioconv/augment, in one "
                             "process, the same draws in turns (e.g. --against 43d5258 b76b12f)")
    parser.add_argument("--rounds", type=int, default=40, help="with --against: rounds (default 40)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.against:
        from augment_history import run_history

        return run_history(args.against, args.batch, args.seconds, args.sample_rate, args.rounds)
    if args.transforms:
        from augment_transforms import run_transform_table

        return run_transform_table(args.batch, args.seconds, args.sample_rate, args.repeats, args.codec_workers,
                                   None if args.only is None else args.only.split(","), args.separate)
    if args.ablation:
        print(f"batch {args.batch} x {args.seconds} s at {args.sample_rate} Hz; {torch.get_num_threads()} CPU "
              f"threads; median CPU time per call of {args.repeats} interleaved runs")
        in_place_ablation(make_batch(args.batch, int(args.seconds * args.sample_rate), args.sample_rate),
                          args.sample_rate, args.repeats)
        return 0
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch-audiomentations' output_type notice
    sr = args.sample_rate
    x_cpu = make_batch(args.batch, int(args.seconds * sr), sr)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"batch {args.batch} x {args.seconds} s at {sr} Hz; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads; median of {args.repeats} interleaved runs")
    with tempfile.TemporaryDirectory() as tmp:
        rir_dir = Path(tmp)
        write_rirs(rir_dir, sr)
        for device in devices:
            x = x_cpu.to(device)
            runs = {"audioconv": ours(x, sr, rir_dir)}
            peers = [("torch-audiomentations", torch_audiomentations_chain)]
            if device == "cpu":
                peers.insert(0, ("audiomentations", audiomentations_chain))
            for name, make in peers:
                try:
                    runs[name] = make(x, sr, rir_dir)
                except ImportError:
                    print(f"[{device}] {name}: not installed, skipped")
            timings = time_interleaved(runs, args.repeats, device)
            wall = {name: args.batch / w for name, (w, _) in timings.items()}
            cpu = {name: args.batch / c for name, (_, c) in timings.items()}
            print(f"[{device}]{'':20} clips/s (wall)   clips per CPU-second")
            for name in runs:
                ratio = "" if name == "audioconv" else f"  audioconv is {wall['audioconv'] / wall[name]:.1f}x"
                ratio_cpu = "" if name == "audioconv" else f" ({cpu['audioconv'] / cpu[name]:.1f}x)"
                print(f"  {name:<22} {wall[name]:9.0f}{ratio:<22} {cpu[name]:9.0f}{ratio_cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
