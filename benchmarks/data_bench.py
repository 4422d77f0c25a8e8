"""Clips per second through a DataLoader: decode + resample + downmix + crop, 0 and 2 workers; and
files vs WebDataset shards of the same corpus.

Compares, on the same Speech Commands-layout corpus and DataLoader settings:

* ``audioconv``   — ``ManifestDataset`` (reads only the crop's frames, cached resampling kernel);
* ``audio.load``  — the obvious hand-written dataset: ``audio.load(path, sample_rate=16000)`` of
                    the whole clip (torchaudio builds its sinc kernel at every call), mean, crop;
* ``librosa``     — ``librosa.load(path, sr=16000, mono=True)`` (soxr resampler), crop.

``--shards`` (default on when webdataset is installed) also writes the corpus as shards
(``audioconv shards``, ``--shard-size``) and times, side by side with the same workers and batch
size, ``ManifestDataset`` (one file per clip, shuffled order) against ``ShardClips`` + ``ShardLoader``
(sequential reads of tar shards, shuffle buffer of 1000 clips per worker), both with random crops.

Without ``--root`` a synthetic corpus is written to a temporary folder: ``--n16`` 1-s clips at
16 kHz mono (no resampling needed) and ``--n44`` 1-s clips at 44.1 kHz stereo. Usage::

    python benchmarks/data_bench.py                       # synthetic corpus
    python benchmarks/data_bench.py --root /tmp/kws       # a real one (e.g. make_kws_corpus.py)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from audioconv.io import audio  # noqa: E402
from audioconv.data import ManifestDataset, collate  # noqa: E402
from audioconv.io.importers import import_speech_commands  # noqa: E402

WORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def make_corpus(root: Path, n16: int, n44: int, seed: int = 0) -> Path:
    """Speech Commands layout: 1-s clips (tone + noise), 16 kHz mono and 44.1 kHz stereo."""
    rng = np.random.default_rng(seed)
    val, test = [], []
    for i in range(n16 + n44):
        sr, ch = (16000, 1) if i < n16 else (44100, 2)
        word = WORDS[i % len(WORDS)]
        spk = f"{i // len(WORDS):08x}"
        t = np.arange(sr) / sr
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)[:, None] + 0.05 * rng.standard_normal((sr, ch))
        path = root / word / f"{spk}_nohash_0.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
        (val if i % 10 == 1 else test if i % 10 == 2 else []).append(f"{word}/{path.name}")
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


class NaiveAudioLoad(Dataset):
    """Whole-clip ``audio.load(..., sample_rate=...)`` then mono and a random crop (global torch RNG)."""

    def __init__(self, records, labels, sample_rate, clip_s):
        self.records, self.sr, self.n = records, sample_rate, int(round(clip_s * sample_rate))
        self.index = {lab: i for i, lab in enumerate(labels)}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        wav, _ = audio.load(r["audio_filepath"], offset_s=r.get("offset", 0.0), duration_s=r.get("duration"),
                            sample_rate=self.sr)
        wav = wav.mean(0, keepdim=True)
        start = int(torch.randint(0, max(wav.shape[-1] - self.n, 0) + 1, (1,)))
        return audio.fix_length(wav[:, start : start + self.n], self.n, offset=0), self.index[r["label"]]


class LibrosaLoad(NaiveAudioLoad):
    """``librosa.load(path, sr=..., mono=True)`` (soxr_hq) then a random crop."""

    def __getitem__(self, i):
        import librosa

        r = self.records[i]
        y, _ = librosa.load(r["audio_filepath"], sr=self.sr, mono=True, offset=r.get("offset", 0.0),
                            duration=r.get("duration"))
        wav = torch.from_numpy(y)[None]
        start = int(torch.randint(0, max(wav.shape[-1] - self.n, 0) + 1, (1,)))
        return audio.fix_length(wav[:, start : start + self.n], self.n, offset=0), self.index[r["label"]]


def time_epochs(dataset, workers: int, batch_size: int, epochs: int) -> list[float]:
    """Clips/s of each epoch (worker start-up included, as a training loop sees it)."""
    rates = []
    for epoch in range(epochs):
        torch.manual_seed(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate)
        t0 = time.perf_counter()
        n = 0
        for waves, labels, lengths in loader:
            n += waves.shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return rates


def time_shard_epochs(spec: str, labels, workers: int, batch_size: int, epochs: int, sample_rate: int,
                      clip_s: float) -> list[float]:
    """Clips/s of each epoch read from shards (worker start-up included)."""
    from audioconv.data.shards import ShardClips, ShardLoader

    rates = []
    for epoch in range(epochs):
        ds = ShardClips(spec, sample_rate, clip_s, labels=labels, seed=0, shuffle_buffer=1000)
        t0 = time.perf_counter()
        n = sum(waves.shape[0] for waves, _, _ in ShardLoader(ds, epoch, batch_size, workers))
        rates.append(n / (time.perf_counter() - t0))
    return rates


def files_vs_shards(records, labels, args, workers: list[int], tmp: Path) -> dict:
    """``{"files": {workers: clips/s}, "shards": {...}}`` on the same clips (split keys dropped)."""
    from audioconv.data.shards import write_shards
    from audioconv.io.manifest import write_manifest

    manifest = tmp / "all.jsonl"
    write_manifest(manifest, [{k: v for k, v in r.items() if k != "split"} for r in records])
    t0 = time.perf_counter()
    written = write_shards(manifest, str(tmp / "shards" / "s-%06d.tar"), max_size=args.shard_size)["sets"]["all"]
    print(f"shards: {len(written['shards'])} of up to {args.shard_size} ({written['bytes'] / 1e6:.1f} MB) written "
          f"in {time.perf_counter() - t0:.1f} s")
    out = {"files": {}, "shards": {}}
    for w in workers:
        out["files"][str(w)] = round(max(time_epochs(ManifestDataset(records, args.sample_rate, args.clip_s, labels=labels),
                                                     w, args.batch_size, args.epochs)), 1)
        out["shards"][str(w)] = round(max(time_shard_epochs(written["spec"], labels, w, args.batch_size, args.epochs,
                                                            args.sample_rate, args.clip_s)), 1)
    for name in ("files", "shards"):
        print(f"{'all':<16}{name:<12}" + "".join(f"{out[name][str(w)]:>14.0f}" for w in workers), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, help="Speech Commands-layout corpus (default: synthetic, in a temp dir)")
    p.add_argument("--n16", type=int, default=1000, help="synthetic 16 kHz mono clips")
    p.add_argument("--n44", type=int, default=200, help="synthetic 44.1 kHz stereo clips")
    p.add_argument("--workers", default="0,2", help="comma list of num_workers")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per setting (best reported)")
    p.add_argument("--clip-s", type=float, default=1.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--peers", default="audio.load,librosa", help="comma list; empty for none")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in the main process (DataLoader workers always use 1); default 1")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--shards", action=argparse.BooleanOptionalAction, default=None,
                   help="also time files vs WebDataset shards (default: when webdataset is installed)")
    p.add_argument("--shard-size", default="16MB", help="largest shard for --shards (default 16MB)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or make_corpus(Path(tmp) / "speech_commands", args.n16, args.n44)
        t0 = time.perf_counter()
        records = import_speech_commands(root, progress=False).records
        import_s = time.perf_counter() - t0
        subsets = {"all": records}
        by_rate = {}
        for r in records:
            by_rate.setdefault(r["sample_rate"], []).append(r)
        if len(by_rate) > 1:
            subsets.update({f"{sr // 1000 if sr % 1000 == 0 else sr / 1000} kHz only": rs for sr, rs in sorted(by_rate.items())})
        labels = sorted({r["label"] for r in records})
        results = {
            "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "load_average_1min": os.getloadavg()[0], "python": platform.python_version(),
                        "torch": torch.__version__},
            "corpus": {"root": str(args.root) if args.root else "synthetic", "clips": len(records),
                       "rates_hz": {str(k): len(v) for k, v in sorted(by_rate.items())}},
            "import_clips_per_s": len(records) / import_s,
            "clips_per_s": {},
        }
        print(f"corpus: {results['corpus']}  import: {results['import_clips_per_s']:.0f} clips/s "
              f"(headers read)  cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
        impls = {"audioconv": lambda rs: ManifestDataset(rs, args.sample_rate, args.clip_s, labels=labels)}
        peers = [x for x in args.peers.split(",") if x]
        if "audio.load" in peers:
            impls["audio.load"] = lambda rs: NaiveAudioLoad(rs, labels, args.sample_rate, args.clip_s)
        if "librosa" in peers:
            impls["librosa"] = lambda rs: LibrosaLoad(rs, labels, args.sample_rate, args.clip_s)
        workers = [int(w) for w in args.workers.split(",")]
        header = f"{'subset':<16}{'impl':<12}" + "".join(f"{f'workers={w}':>14}" for w in workers)
        print(header + "\n" + "-" * len(header))
        for subset, rs in subsets.items():
            for name, make in impls.items():
                row = {}
                for w in workers:
                    row[w] = max(time_epochs(make(rs), w, args.batch_size, args.epochs))
                results["clips_per_s"].setdefault(subset, {})[name] = {str(w): round(v, 1) for w, v in row.items()}
                print(f"{subset:<16}{name:<12}" + "".join(f"{row[w]:>14.0f}" for w in workers), flush=True)
        if args.shards is None:
            import importlib.util

            args.shards = importlib.util.find_spec("webdataset") is not None
        if args.shards:
            results["files_vs_shards"] = files_vs_shards(records, labels, args, workers, Path(tmp))
        results["load_average_1min_after"] = os.getloadavg()[0]
    print("clips/s = clips decoded, resampled to 16 kHz, downmixed, cropped/padded to 1 s and batched; best of "
          f"{args.epochs} epochs, DataLoader start-up included")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
