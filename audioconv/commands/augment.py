"""`audioconv augment`: preview an augmentation chain on one file — N augmented WAVs, the drawn
parameters as JSON, and a PNG of their log-mel spectrograms as the model's front end computes them
(titled with the values drawn for each: SNR, gain, RT60, semitones …; one dB scale for all panels)."""
from __future__ import annotations

import textwrap
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "augment", help="preview an augmentation chain on a file: WAVs, params, spectrograms",
        description="Preview an augmentation chain on one file: N augmented WAVs (aug_NN.wav, 32-bit float), "
                    "each titled in the PNG with the values drawn for it (SNR, gain, RT60, semitones ...), "
                    "the drawn parameters (params.json, replayable) and a PNG of their log-mel spectrograms "
                    "(logmels.png). The same --seed gives the same result on any device.")
    p.add_argument("input", metavar="IN.wav", help="audio file to augment")
    p.add_argument("-o", "--out", required=True, metavar="OUTDIR", help="folder for the results (created)")
    p.add_argument("--n", type=int, default=8, help="number of augmented versions (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the torch.Generator (default 0)")
    p.add_argument("--chain", metavar="CHAIN.json", help="augmentation chain (default: the default training chain)")
    p.add_argument("--sample-rate", type=int, help="resample the input to this rate (Hz) first")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from audioconv.augment import chain_to_config, default_chain, describe_example, load_chain, params_to_json
    from audioconv.features import LogMel, LogMelConfig
    from audioconv.io.audio import load, save
    from audioconv.io.files import ensure_folder, write_json
    from audioconv.plots.augment_preview import plot_logmels
    from audioconv.training.config import TrainConfig
    from audioconv.utils import resolve_device

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    device = resolve_device(args.device)
    wav, sr = load(args.input, sample_rate=args.sample_rate)
    front_end = LogMel(LogMelConfig(sample_rate=sr, n_mels=TrainConfig.n_mels))  # as `audioconv train` builds it
    front_end.check_length(wav.shape[-1], args.input)
    chain = load_chain(args.chain, sr) if args.chain else default_chain(sr)
    out = ensure_folder(args.out)  # a file in the way: "OUT is a file, not a folder"

    batch = wav.to(device).expand(args.n, *wav.shape).contiguous()  # (N, C, T)
    generator = torch.Generator().manual_seed(args.seed)  # CPU: the same draws on every device
    params = chain.sample(args.n, generator, device)
    augmented = chain.apply(batch, params).cpu()

    files, titles, drawn = [], ["input"], []
    for i, y in enumerate(augmented):
        path = save(out / f"aug_{i:02d}.wav", y, sr, subtype="FLOAT")
        files.append(path.name)
        drawn.append(describe_example(chain, params, i, values=True))
        titles.append(textwrap.fill(f"{i:02d}: {drawn[-1]}", width=52))
    record = {"input": str(Path(args.input).resolve()), "sample_rate": sr, "seed": args.seed, "n": args.n,
              "device": str(device), "files": files, "chain": chain_to_config(chain),
              "params": params_to_json(params)}
    write_json(out / "params.json", record, indent=1)
    png = out / "logmels.png"
    plot_logmels([wav, *augmented], sr, titles, path=png, front_end=front_end)

    print(f"augmented {args.input} ({wav.shape[0]} ch, {wav.shape[1] / sr:.2f} s at {sr} Hz) "
          f"{args.n} times on {device}")
    for name, values in zip(files, drawn):
        print(f"  {out / name}  {values}")
    print(f"  {out / 'params.json'}  drawn parameters (replay: chain.apply(x, params_from_json(record['params'])))")
    print(f"  {png}  log-mel spectrograms")
    if _mixes_the_batch(chain):
        print("  note: the chain's BatchMix (mix) takes its partners from the batch, here the other versions of this "
              "one file; in training they are other clips")
    return 0


def _mixes_the_batch(aug) -> bool:
    from audioconv.augment import BatchMix

    return isinstance(aug, BatchMix) or any(_mixes_the_batch(t) for t in getattr(aug, "transforms", ()))
