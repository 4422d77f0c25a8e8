"""How the commands say what ``--skip-bad`` left out: once, a count per set and the first few clips."""
from __future__ import annotations


def skipped_lines(name: str, skipped: dict[str, str], n_clips: int, show: int = 5) -> list[str]:
    """``["train: skipped 2 of 40 clips that cannot be used (--skip-bad):", "  m.jsonl:5: reason", ...]``;
    ``[]`` when nothing was skipped. ``skipped`` is ``{"manifest:line": reason}``."""
    if not skipped:
        return []
    lines = [f"{name}: skipped {len(skipped)} of {n_clips} clips that cannot be used (--skip-bad):"]
    lines += [f"  {where}: {why}" for where, why in list(skipped.items())[:show]]
    if len(skipped) > show:
        lines.append(f"  ... and {len(skipped) - show} more (--json lists them all)")
    return lines
