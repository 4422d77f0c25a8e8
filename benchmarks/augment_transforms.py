"""Each transform on its own against the nearest transform of audiomentations and torch-audiomentations.

Run through ``python benchmarks/augment_bench.py --transforms --threads 1``. Every runner gets the
same batch (``augment_bench.make_batch``: speech-like noise bursts, 1 s at 16 kHz, mono) with p = 1;
audiomentations runs one clip at a time (its only mode), torch-audiomentations batched in its
per-example mode. Runners take turns within each repeat (``--separate``: each runner's calls in one
block); medians of the repeats. The last column counts the page faults of audioconv's calls: taking
turns with a peer that leaves many small numpy arrays on the heap, each fresh 16 MB output of ours
comes from memory the system maps anew, 4096 faults a call. Codecs cannot be
batched (libsndfile encodes one clip at a time): they are timed as they are meant to be used, as the
``transform`` of a dataset in DataLoader worker processes (one torch thread each), against
audiomentations' ``Mp3Compression`` (lameenc backend) in the same loader.
"""
from __future__ import annotations

import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audioconv import augment as A
from augment_bench import make_batch, time_interleaved


def _am(name, **kwargs):
    import audiomentations as am

    return getattr(am, name)(p=1.0, **kwargs)


def _ta(name, sample_rate, **kwargs):
    import torch_audiomentations as ta

    return getattr(ta, name)(p=1.0, mode="per_example", sample_rate=sample_rate, output_type="tensor", **kwargs)


def rows(sr: int, events_dir: Path) -> list[tuple[str, object, object, object]]:
    """``(label, audioconv transform, audiomentations factory or None, torch-audiomentations factory or None)``."""
    events = sorted(events_dir.glob("*.wav"))
    return [
        ("PitchShift ±4 st", A.PitchShift(sr, (-4, 4), p=1.0), lambda: _am("PitchShift", min_semitones=-4,
                                                                            max_semitones=4),
         lambda: _ta("PitchShift", sr, min_transpose_semitones=-4, max_transpose_semitones=4)),
        ("TimeStretch 0.8-1.25", A.TimeStretch(sr, (0.8, 1.25), p=1.0),
         lambda: _am("TimeStretch", min_rate=0.8, max_rate=1.25, leave_length_unchanged=True), None),
        ("LowPass 12-24 dB/oct", A.LowPass(sr, cutoff_hz=(150, 7500), p=1.0),
         lambda: _am("LowPassFilter", min_cutoff_freq=150, max_cutoff_freq=7500),
         lambda: _ta("LowPassFilter", sr, min_cutoff_freq=150, max_cutoff_freq=7500)),
        ("HighPass 12-24 dB/oct", A.HighPass(sr, p=1.0), lambda: _am("HighPassFilter"),
         lambda: _ta("HighPassFilter", sr)),
        ("BandPass", A.BandPass(sr, p=1.0), lambda: _am("BandPassFilter"), lambda: _ta("BandPassFilter", sr)),
        ("BandStop", A.BandStop(sr, p=1.0), lambda: _am("BandStopFilter"), lambda: _ta("BandStopFilter", sr)),
        ("Clip (percentile 0-40)", A.Clip(percentile=(0, 40), p=1.0), lambda: _am("ClippingDistortion"), None),
        ("Clip (threshold_db)", A.Clip(threshold_db=(-20, -1), p=1.0), lambda: _am("ClippingDistortion"), None),
        ("Distortion (tanh)", A.Distortion(p=1.0), lambda: _am("TanhDistortion"), None),
        ("BitCrush 5-10 bits", A.BitCrush((5, 10), p=1.0), lambda: _am("BitCrush"), None),
        ("GainTransition", A.GainTransition(sr, duration_s=(0.2, 1.0), p=1.0),
         lambda: _am("GainTransition", min_duration=0.2, max_duration=1.0), None),
        ("TimeMask", A.TimeMask(sr, max_s=0.1, n=(1, 3), p=1.0), lambda: _am("TimeMask"),
         lambda: _ta("SpliceOut", sr, num_time_intervals=3, max_width=100)),
        ("AddEvents", A.AddEvents(sr, background=events, n=(1, 4), p=1.0),
         lambda: _am("AddShortNoises", sounds_path=events_dir, min_time_between_sounds=0.1,
                     max_time_between_sounds=0.5, min_snr_db=0, max_snr_db=20), None),
        # the floor of any transform that returns new memory: one copy of the batch
        ("(reference) a copy of the batch", lambda x, generator: x.clone(), None, None),
    ]


def write_events(folder: Path, sample_rate: int, count: int = 8) -> None:
    g = torch.Generator().manual_seed(3)
    for i in range(count):
        n = int(sample_rate * (0.1 + 0.4 * i / count))
        burst = torch.randn(n, generator=g) * torch.hann_window(n)
        sf.write(folder / f"event_{i}.wav", (0.3 * burst).numpy(), sample_rate, subtype="FLOAT")


def _runner(kind: str, make, x: torch.Tensor, sr: int):
    """A callable that augments the whole batch ``x`` once (or None if the peer is missing)."""
    if kind == "audioconv":
        g = torch.Generator().manual_seed(0)
        return lambda: make(x, generator=g)
    try:
        transform = make()
    except ImportError:
        return None
    if kind == "audiomentations":
        clips = x[:, 0].numpy()
        return lambda: [transform(samples=c, sample_rate=sr) for c in clips]
    return lambda: transform(x, sample_rate=sr)


def _counting_faults(run, counts: list):
    """``run``, appending the minor page faults of each call (fresh memory touched) to ``counts``."""
    def counted():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        run()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counted


def batched_table(batch: int, seconds: float, sr: int, repeats: int, only: list[str] | None,
                  separate: bool = False) -> None:
    x = make_batch(batch, int(seconds * sr), sr)
    print("| transform | audioconv clips/s | audiomentations clips/s | torch-audiomentations clips/s "
          "| audioconv page faults per call |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        write_events(Path(tmp), sr)
        for label, ours, am, ta in rows(sr, Path(tmp)):
            if only and not any(o.lower() in label.lower() for o in only):
                continue
            faults: list[int] = []
            runs = {"audioconv": _counting_faults(_runner("audioconv", ours, x, sr), faults)}
            for kind, make in (("audiomentations", am), ("torch-audiomentations", ta)):
                run = None if make is None else _runner(kind, make, x, sr)
                if run is not None:
                    runs[kind] = run
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                timings = time_interleaved(runs, repeats, "cpu", separate)
            rate = {k: batch / w for k, (w, _) in timings.items()}
            cells = [f"{rate['audioconv']:.0f}"]
            for kind in ("audiomentations", "torch-audiomentations"):
                cells.append(f"{rate[kind]:.0f} (audioconv {rate['audioconv'] / rate[kind]:.1f}x)" if kind in rate
                             else "-")
            cells.append(f"{statistics.median(faults[1:]):.0f}")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


class _Clips(torch.utils.data.Dataset):
    """The batch's clips, each passed through ``transform`` (audioconv: with a generator of its own)."""

    def __init__(self, clips: torch.Tensor, transform, kind: str, sample_rate: int):
        self.clips, self.transform, self.kind, self.sample_rate = clips, transform, kind, sample_rate

    def __len__(self):
        return self.clips.shape[0]

    def __getitem__(self, i):
        clip = self.clips[i]
        if self.kind == "audioconv":
            return self.transform(clip, generator=torch.Generator().manual_seed(i))
        return torch.from_numpy(np.asarray(self.transform(samples=clip[0].numpy(), sample_rate=self.sample_rate)))


def _one_thread(_):
    torch.set_num_threads(1)


def _as_list(batch):  # the peer's MP3 keeps its delay: outputs of several lengths
    return batch


def codec_table(clips: int, seconds: float, sr: int, repeats: int, workers: int, only: list[str] | None) -> None:
    x = make_batch(clips, int(seconds * sr), sr)
    candidates = [(f"Codec {name}", "audioconv", A.Codec(sr, formats=[name], p=1.0))
                  for name in ("mulaw", "alaw", "gsm", "mp3", "vorbis", "opus")]
    candidates[3] = ("Codec mp3 (8-64 kbit/s)", "audioconv", A.Codec(sr, formats=["mp3"], compression_level=(0.8, 0.99),
                                                                       p=1.0))
    try:
        import audiomentations as am
        import lameenc  # noqa: F401  (the backend it needs)

        candidates.append(("audiomentations Mp3Compression (lameenc, 8-64 kbit/s)", "audiomentations",
                           am.Mp3Compression(min_bitrate=8, max_bitrate=64, backend="lameenc", preserve_delay=True,
                                             p=1.0)))
    except ImportError:
        print("(audiomentations Mp3Compression skipped: needs audiomentations and lameenc)")
    print(f"\n{clips} clips of {seconds} s at {sr} Hz through a DataLoader with {workers} worker processes "
          f"(1 torch thread each); median of {repeats} epochs\n")
    print("| codec | clips/s |")
    print("|---|---:|")
    for label, kind, transform in candidates:
        if only and not any(o.lower() in label.lower() for o in only):
            continue
        loader = torch.utils.data.DataLoader(_Clips(x, transform, kind, sr), batch_size=16, num_workers=workers,
                                             worker_init_fn=_one_thread, persistent_workers=workers > 0,
                                             collate_fn=_as_list)
        times = []
        for r in range(repeats + 1):
            start = time.perf_counter()
            for _ in loader:
                pass
            times.append(time.perf_counter() - start)
        print(f"| {label} | {clips / statistics.median(times[1:]):.0f} |", flush=True)
        del loader


def run_transform_table(batch: int, seconds: float, sr: int, repeats: int, workers: int,
                        only: list[str] | None = None, separate: bool = False) -> int:
    print(f"batch {batch} x {seconds} s at {sr} Hz; torch {torch.__version__}, {torch.get_num_threads()} CPU "
          f"thread(s); median of {repeats} {'runs, each runner in one block' if separate else 'interleaved runs'}\n")
    batched_table(batch, seconds, sr, repeats, only, separate)
    codec_table(min(batch, 64), seconds, sr, repeats, workers, only)
    return 0
