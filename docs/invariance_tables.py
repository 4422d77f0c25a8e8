#!/usr/bin/env python3
"""The tables of docs/invariance.md, read from the JSON that `audioconv invariance` wrote into each run.

    python docs/invariance_tables.py RUNS_DIR [PREFIX ...]

RUNS_DIR holds run folders named ``<corpus>_<model>_<augmentation>`` (each with ``invariance/``); one
set of Markdown tables per prefix (default ``demo kws``). Distances at ±amount are the mean of the two
signs; a cell is ``inv / eq`` where the layer has an equivariance distance; "(centre)" marks a layer
compared by the centre of its receptive field (it includes a border effect).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TIME_MS = (10, 40, 160)
PITCH_ST = (1, 2, 4)
OTHER = (("gain", -24.0, "gain −24 dB"), ("gain", 12.0, "gain +12 dB"), ("reverb", 1.0, "RT60 1 s"),
         ("noise", 20.0, "SNR 20 dB"), ("noise", 0.0, "SNR 0 dB"))


def _load(run: Path, transform: str) -> dict | None:
    path = run / "invariance" / f"invariance_{transform}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _at(d: dict, values: list, amount: float, both_signs: bool = True):
    """Mean of ``values`` at ``amount`` and ``-amount`` (units of the JSON: s, semitones, dB)."""
    picked = [v for a, v in zip(d["amounts"], values) if a is not None and v is not None
              and (abs(a - amount) < 1e-9 or (both_signs and abs(a + amount) < 1e-9))]
    return sum(picked) / len(picked) if picked else None


def _f(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _cell(d, info, amount) -> str:
    inv = _at(d, info["invariance"], amount)
    if info.get("equivariance") is None:
        return _f(inv)
    return f"{_f(inv)} / {_f(_at(d, info['equivariance'], amount))}"


def _shift_table(runs, transform, amounts, scale, unit, stride_name) -> list[str]:
    head = " | ".join(f"±{a:g} {unit}" for a in amounts)
    lines = [f"| run | layer | {stride_name} | {head} |", "|" + " --- |" * (3 + len(amounts))]
    for run in runs:
        d = _load(run, transform)
        if d is None:
            continue
        for name, info in d["layers"].items():
            stride = info["stride_cells"] if info["stride_cells"] is not None else "–"
            stride = f"{stride} (centre)" if info["border_rule"] == "centre" else stride
            cells = " | ".join(_cell(d, info, a / scale) for a in amounts)
            lines.append(f"| {run.name} | {name} | {stride} | {cells} |")
    return lines


def _other_table(runs) -> list[str]:
    lines = ["| run | layer | " + " | ".join(label for _, _, label in OTHER) + " |", "|" + " --- |" * (2 + len(OTHER))]
    for run in runs:
        data = {t: _load(run, t) for t in ("gain", "reverb", "noise")}
        if any(v is None for v in data.values()):
            continue
        for name in data["gain"]["layers"]:
            cells = [_f(_at(data[t], data[t]["layers"][name]["invariance"], a, False)) for t, a, _ in OTHER]
            lines.append(f"| {run.name} | {name} | " + " | ".join(cells) + " |")
    return lines


def _probability_table(runs) -> list[str]:
    cols = [("time_shift", 0.16, "shift ±160 ms"), ("pitch_shift", 2.0, "pitch ±2 st"), ("pitch_shift", 4.0, "pitch ±4 st"),
            *OTHER]
    lines = ["| run | clean: p(true) / acc | " + " | ".join(c[2] for c in cols) + " |", "|" + " --- |" * (2 + len(cols))]
    for run in runs:
        base = _load(run, "gain")
        if base is None:
            continue
        p = base["probability"]
        cells = []
        for t, a, _ in cols:
            d = _load(run, t)
            if d is None:
                cells.append("–")
                continue
            both = t in ("time_shift", "pitch_shift")
            cells.append(f"{_f(_at(d, d['probability']['p_true'], a, both))} / "
                         f"{_f(_at(d, d['probability']['accuracy'], a, both))}")
        lines.append(f"| {run.name} | {_f(p['p_original'])} / {_f(_at(base, p['accuracy'], 0.0, False))} | "
                     + " | ".join(cells) + " |")
    return lines


def main(argv: list[str]) -> None:
    root = Path(argv[0])
    for prefix in argv[1:] or ["demo", "kws"]:
        runs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix + "_"))
        print(f"### {prefix}: time shift (invariance / equivariance distance; stride in frames)\n")
        print("\n".join(_shift_table(runs, "time_shift", TIME_MS, 1000.0, "ms", "stride (frames)")) + "\n")
        print(f"### {prefix}: pitch shift (invariance / equivariance distance; stride in mel bins)\n")
        print("\n".join(_shift_table(runs, "pitch_shift", PITCH_ST, 1.0, "st", "stride (bins)")) + "\n")
        print(f"### {prefix}: gain, reverberation, noise (invariance distance)\n")
        print("\n".join(_other_table(runs)) + "\n")
        print(f"### {prefix}: probability of the true class / accuracy\n")
        print("\n".join(_probability_table(runs)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
