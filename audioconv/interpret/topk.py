"""Top-k activations of each unit over a dataset, each projected back to the input (Zeiler & Fergus Fig. 2).

:func:`top_k` runs one batched pass without gradients over the dataset, keeping for every channel
of a layer its ``k`` strongest activations over all examples and feature-map positions (a running
top-k merge: memory ``O(channels * k)`` plus the log-mel of the examples currently in some
channel's top-k). Each kept ``(example, channel, position)`` is then projected with the
:class:`~audioconv.interpret.projector.Projector` and cropped to the position's receptive field, next
to the input patch under that receptive field.

What counts as a hit (real corpora are full of long, zero-padded clips): an activation above zero,
at a position whose receptive field is centred on a real (unpadded), non-silent frame
(:mod:`audioconv.interpret.frames`), and by default at most one per clip (``max_per_clip``), so
the k hits of a unit show k different clips instead of k neighbouring positions of one.

The scan runs the model up to the layer along the projector's traced path
(:class:`~audioconv.interpret.traced.TracedModel`), so any model the projector accepts works: a model
with a LogMel ``frontend`` scans a dataset of waveforms, a plain CNN a dataset of log-mel items.

Ordering: descending activation; ties are broken by lower example index, then lower feature-map
row ``f``, then column ``t`` — the same order a stable sort of all hits would give; with
``max_per_clip`` each clip's best positions are chosen in that same order first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.data import collate
from audioconv.interpret.frames import SILENCE_DB, active_frames, allowed_positions
from audioconv.interpret.projector import Projector
from audioconv.utils import resolve_device

__all__ = ["TopK", "top_k", "scan_top_k"]

_F_SHIFT = 20  # key = example << 40 | f << 20 | t  (feature maps up to 2^20 cells per axis)
_MISSING = (1 << 62) - 1  # the key of an empty slot (a unit with fewer hits than k); sorts last
_E_SHIFT = 40


# ---- result -------------------------------------------------------------------------------------
@dataclass
class TopK:
    """The ``k`` strongest activations of each of ``K`` channels of ``layer`` over a dataset.

    Row ``u`` describes channel ``channels[u]``; column ``r`` is its rank-``r`` activation (0 =
    strongest). A hit is an activation above zero at an allowed position (on a real, non-silent
    frame: :mod:`audioconv.interpret.frames`), at most ``max_per_clip`` per clip. ``k`` may be
    smaller than asked when the dataset offers fewer hit slots; a unit with fewer hits than ``k``
    (``n_hits[u] < k``) has empty slots ``r >= n_hits[u]``: score 0, example -1, position
    ``(-1, -1)``, receptive field ``(0, 0, 0, 0)``, projection / patch / clip id / label ``None``.

    Attributes:
        layer: layer name (``"conv2"``).
        mode: projection mode (``"deconv"``, ``"guided"``, ``"gradient"``).
        channels: ``(K,)`` channel indices.
        scores: ``(K, k)`` activation values (the layer's output after its nonlinearity).
        example_indices: ``(K, k)`` dataset indices.
        positions: ``(K, k, 2)`` feature-map cells ``(f, t)``.
        receptive_fields: ``(K, k, 4)`` ``(f0, f1, t0, t1)`` half-open input (log-mel) cells.
        projections: ``[K][k]`` arrays ``(f1-f0, t1-t0)``: the projection cropped to the receptive
            field (log-mel space, signed, arbitrary units).
        patches: ``[K][k]`` arrays ``(f1-f0, t1-t0)``: the input log-mel (dB) under the receptive field.
        clip_ids: ``[K][k]`` the clip's ``audio_filepath`` (with ``@offset_s`` when the record has one),
            or the dataset index as a string for datasets without records.
        labels: ``[K][k]`` label names (``None`` for unlabelled datasets).
        hz: ``(F,)`` centre frequency (Hz) of each mel bin of the inputs (``None`` without a LogMel front end).
        seconds: ``(T,)`` centre time (s) of each frame of the longest input (``None`` likewise).
        n_examples: examples scanned.
        n_hits: ``(K,)`` filled slots per unit (0: the unit is never above zero on an allowed position).
        max_per_clip: the per-clip limit used (``None``: none).
        silence_db: the silence margin used (``None``: silent frames allowed).
        n_silent: scanned examples with no allowed position at all (all padding or silence).
    """

    layer: str
    mode: str
    channels: np.ndarray
    scores: np.ndarray
    example_indices: np.ndarray
    positions: np.ndarray
    receptive_fields: np.ndarray
    projections: list = field(repr=False)
    patches: list = field(repr=False)
    clip_ids: list
    labels: list | None
    hz: np.ndarray | None = field(repr=False)
    seconds: np.ndarray | None = field(repr=False)
    n_examples: int = 0
    n_hits: np.ndarray | None = None
    max_per_clip: int | None = 1
    silence_db: float | None = SILENCE_DB
    n_silent: int = 0

    def __post_init__(self):
        if self.n_hits is None:  # a result built by hand: every slot is a hit
            self.n_hits = np.full(len(self.channels), self.k, dtype=np.int64)

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    def to_dict(self) -> dict:
        """JSON-ready index (no pixel arrays): per unit its hits (rank, activation, clip, position,
        receptive field in cells, Hz and s) and ``n_hits``; empty slots are left out."""
        units = []
        for u, ch in enumerate(self.channels):
            items = []
            for r in range(int(self.n_hits[u])):
                f0, f1, t0, t1 = (int(v) for v in self.receptive_fields[u, r])
                item = {
                    "rank": r,
                    "activation": float(self.scores[u, r]),
                    "example": int(self.example_indices[u, r]),
                    "clip_id": self.clip_ids[u][r],
                    "label": None if self.labels is None else self.labels[u][r],
                    "position": [int(v) for v in self.positions[u, r]],
                    "receptive_field": [f0, f1, t0, t1],
                }
                if self.hz is not None:
                    item["hz_range"] = [float(self.hz[f0]), float(self.hz[f1 - 1])]
                if self.seconds is not None:
                    item["seconds_range"] = [float(self.seconds[t0]), float(self.seconds[t1 - 1])]
                items.append(item)
            units.append({"channel": int(ch), "n_hits": int(self.n_hits[u]), "top": items})
        return {"layer": self.layer, "mode": self.mode, "k": self.k, "n_examples": int(self.n_examples),
                "max_per_clip": self.max_per_clip, "silence_db": self.silence_db, "n_silent": int(self.n_silent),
                "units": units}


# ---- helpers ------------------------------------------------------------------------------------
def _as_projector(model, mode: str | None, device) -> Projector:
    """A given :class:`Projector` (checked against ``mode``/``device`` when those are given) or a new one."""
    if not isinstance(model, Projector):
        return Projector(model, mode=mode or "deconv", device=device)
    if mode is not None and mode != model.mode:
        raise ValueError(f"mode {mode!r} differs from the projector's mode {model.mode!r}; pass one or the other")
    if device is not None and resolve_device(device) != model.device:
        raise ValueError(f"device {str(device)!r} differs from the projector's device {str(model.device)!r}")
    return model


def _select_channels(channels, n: int, layer: str) -> list[int]:
    """Validate ``channels`` (``None`` = all, an int, or a sequence) for a layer of ``n`` channels."""
    if channels is None:
        return list(range(n))
    if isinstance(channels, (int, np.integer)):
        channels = [int(channels)]
    chans = [int(c) for c in channels]
    if not chans:
        raise ValueError(f"channels for {layer} is empty; valid channels are 0..{n - 1}")
    bad = [c for c in chans if not 0 <= c < n]
    if bad:
        raise ValueError(f"channel(s) {bad} out of range for {layer}: valid channels are 0..{n - 1}")
    if len(set(chans)) != len(chans):
        raise ValueError(f"channels for {layer} has duplicates: {chans}")
    return chans


class _Indexed(torch.utils.data.Dataset):
    """``dataset[i]`` → ``(x (C, T) or (F, T), i, real length)`` for :func:`audioconv.data.collate` (the
    index rides in the label slot; the real length is the item's third element when it has one —
    samples for waveforms, frames for log-mel — else its own length); ``None`` items stay ``None``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        if item is None:
            return None
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"dataset item {i} is not a tensor or a (tensor, label, ...) tuple")
        if x.dim() == 1:  # waveform (T,)
            x = x.unsqueeze(0)
        elif x.dim() == 3 and x.shape[0] == 1:  # log-mel (1, F, T)
            x = x[0]
        if x.dim() != 2:
            raise ValueError(f"dataset item {i} has shape {tuple(x.shape)}; expected a waveform (C, T) / (T,) "
                             "or a log-mel (1, F, T) / (F, T)")
        real = int(item[2]) if isinstance(item, (tuple, list)) and len(item) > 2 else x.shape[-1]
        return x, i, min(real, x.shape[-1])


def _top_per_row(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(R, k)`` of the ``k`` largest of each row of ``flat`` ``(R, N)``, ties → lower index.

    Only ties at a positive threshold are resolved (values <= 0 are never kept as hits)."""
    vals, idx = flat.topk(k, dim=1)
    thr = vals[:, -1:]
    n_ge = (flat >= thr).sum(dim=1)
    for row in torch.nonzero((n_ge > k) & (thr[:, 0] > 0)).flatten().tolist():  # keep the first ones
        gt = torch.nonzero(flat[row] > thr[row]).flatten()
        eq = torch.nonzero(flat[row] == thr[row]).flatten()[: k - gt.numel()]
        idx[row] = torch.cat([gt, eq])
    return idx


def _sort_desc(scores: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` best ``(score desc, key asc)`` of ``(K, N)`` scores/keys."""
    order = torch.argsort(keys, dim=1, stable=True)
    scores, keys = scores.gather(1, order), keys.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), keys.gather(1, order)


def _candidates(acts: torch.Tensor, allowed: torch.Tensor, k: int, per_clip: int | None):
    """Each channel's candidate hits of one batch: ``(values (K, N), flat indices (K, N))`` into the
    batch's ``(B, H·W)`` cells, at most ``per_clip`` per example; disallowed cells count as 0."""
    B, n_k, n_f, n_t = acts.shape
    a = acts.double().cpu().masked_fill(~allowed.cpu()[:, None], 0.0)  # (B, K, H, W)
    cells = n_f * n_t
    if per_clip is None or per_clip >= min(k, cells):  # one ranking over the whole batch
        flat = a.permute(1, 0, 2, 3).reshape(n_k, -1)  # (K, B*H*W) in key order
        pick = _top_per_row(flat, min(k, flat.shape[1]))
        return flat.gather(1, pick), pick
    m = min(per_clip, cells)
    per = a.reshape(B * n_k, cells)
    pick = _top_per_row(per, m).view(B, n_k, m)  # each example's best m cells per channel
    vals = per.view(B, n_k, cells).gather(2, pick)
    offset = (torch.arange(B) * cells).view(B, 1, 1)
    return vals.permute(1, 0, 2).reshape(n_k, -1), (pick + offset).permute(1, 0, 2).reshape(n_k, -1)


def _merge(best_s: torch.Tensor, best_k: torch.Tensor, acts: torch.Tensor, allowed: torch.Tensor,
           idx: torch.Tensor, k: int, per_clip: int | None):
    """Merge one batch's activations ``(B, K, Fl, Tl)`` of examples ``idx (B,)`` into the running top-k.

    Cells not ``allowed`` ``(B, Fl, Tl)`` and activations <= 0 are never hits: they enter as score
    ``-inf`` with key ``_MISSING`` and sort last."""
    _, n_k, n_f, n_t = acts.shape
    if max(n_f, n_t) >= 1 << _F_SHIFT:
        raise ValueError(f"feature map {n_f}×{n_t} too large for the top-k index (max {1 << _F_SHIFT})")
    vals, pick = _candidates(acts, allowed, k, per_clip)
    ex = idx[pick // (n_f * n_t)]
    rem = pick % (n_f * n_t)
    keys = (ex << _E_SHIFT) | ((rem // n_t) << _F_SHIFT) | (rem % n_t)
    hit = vals > 0
    vals = vals.masked_fill(~hit, float("-inf"))
    keys = keys.masked_fill(~hit, _MISSING)
    return _sort_desc(torch.cat([best_s, vals], 1), torch.cat([best_k, keys], 1), k)


# ---- the scan -----------------------------------------------------------------------------------
@dataclass
class _Scan:
    channels: list
    scores: torch.Tensor  # (K, k); -inf where a unit has fewer hits
    keys: torch.Tensor  # (K, k) int64; _MISSING where a unit has fewer hits
    inputs: dict  # example index -> (1, F, T) log-mel on CPU
    n_examples: int
    t_max: int
    n_mels: int
    n_candidates: int  # hit slots the dataset offers: sum over examples of min(per_clip, cells)
    n_silent: int  # examples without any allowed position (all padding / silence)


def _check_scan_arguments(k, batch_size, max_per_clip, silence_db) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_per_clip is not None and (isinstance(max_per_clip, bool) or not isinstance(max_per_clip, (int, np.integer))
                                     or int(max_per_clip) < 1):
        raise ValueError(f"max_per_clip must be a positive int or None (no limit), got {max_per_clip!r}")
    if silence_db is not None and not (isinstance(silence_db, (int, float)) and float(silence_db) >= 0):
        raise ValueError(f"silence_db must be >= 0 dB or None (keep silent frames), got {silence_db!r}")


def scan_top_k(model, dataset, layer: str, channels=None, k: int = 9, batch_size: int = 32,
               device=None, progress: bool = True, num_workers: int = 0, max_per_clip: int | None = 1,
               silence_db: float | None = SILENCE_DB) -> _Scan:
    """The running top-k pass of :func:`top_k` without the projections (see there for the arguments)."""
    _check_scan_arguments(k, batch_size, max_per_clip, silence_db)
    traced = _as_projector(model, None, device).traced
    traced.key(layer)  # ValueError listing the valid layers
    chans = _select_channels(channels, traced.path(layer).channels, layer)
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    kind = "waveform" if traced.frontend is not None else "logmel"
    ch_index = torch.as_tensor(chans, device=traced.device)
    best_s = torch.empty(len(chans), 0, dtype=torch.float64)
    best_k = torch.empty(len(chans), 0, dtype=torch.long)
    inputs: dict[int, torch.Tensor] = {}
    n_seen, t_max, n_mels, n_cand, n_silent = 0, 0, 0, 0, 0
    loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_size=int(batch_size), shuffle=False,
                                         num_workers=num_workers, collate_fn=collate)
    for x, idx, lengths in tqdm(loader, disable=not progress, desc=f"top-{k} {layer}", unit="batch"):
        if x.shape[0] == 0:
            continue
        if kind == "logmel" and bool((lengths != lengths[0]).any()):
            raise ValueError(f"log-mel items of examples {idx.tolist()} have different lengths {lengths.tolist()} "
                             "(frames); give log-mel items of one length")
        logmel = traced.to_logmel(x, kind)  # (B, 1, F, T)
        acts = traced.feature_maps(logmel, [layer])[layer].index_select(1, ch_index)  # (B, K, Fl, Tl)
        n_frames = lengths if kind == "logmel" else torch.as_tensor(
            [traced.frontend.n_frames(int(n)) for n in lengths.tolist()])
        frames = active_frames(traced.loudness_logmel(x, kind, logmel), n_frames, silence_db)  # (B, T)
        allowed = allowed_positions(traced.path(layer, logmel), frames, acts.shape[-2:], logmel.shape[-2:])
        best_s, best_k = _merge(best_s, best_k, acts, allowed, idx, int(k), max_per_clip)
        n_ok = allowed.flatten(1).sum(1)
        n_cand += int(n_ok.sum() if max_per_clip is None else n_ok.clamp_max(int(max_per_clip)).sum())
        n_silent += int((n_ok == 0).sum())
        kept = set((best_k[best_k != _MISSING] >> _E_SHIFT).tolist())
        for j, e in enumerate(idx.tolist()):
            if e in kept:
                inputs[e] = logmel[j].detach().cpu()
        for e in [e for e in inputs if e not in kept]:
            del inputs[e]
        n_seen += x.shape[0]
        t_max, n_mels = max(t_max, logmel.shape[-1]), logmel.shape[-2]
    if n_seen == 0:
        raise ValueError("no usable examples in the dataset (all items were None)")
    return _Scan(chans, best_s, best_k, inputs, n_seen, t_max, n_mels, n_cand, n_silent)


def _block_size(counts: list[int], forward_cost: float = 4.0) -> int:
    """Hits per projector input row: the power of two up to 32 that minimises padded hits plus
    ``forward_cost`` per row (one forward pass per row, one backward per hit)."""
    best, best_cost = 1, float("inf")
    for kb in (1, 2, 4, 8, 16, 32):
        n_rows = sum(-(-c // kb) for c in counts)
        cost = n_rows * kb + forward_cost * n_rows
        if cost < best_cost:
            best, best_cost = kb, cost
    return best


def _clip_info(dataset, index: int) -> tuple[str, str | None]:
    records = getattr(dataset, "records", None)
    if records is not None and 0 <= index < len(records):
        rec = records[index]
        cid = str(rec.get("audio_filepath", index))
        if rec.get("offset"):
            cid += f"@{float(rec['offset']):g}s"
        label = rec.get("label")
        return cid, None if label is None else str(label)
    return str(index), None


def top_k(model: nn.Module | Projector, dataset, layer: str, channels=None, k: int = 9, batch_size: int = 32,
          device=None, mode: str | None = None, progress: bool = True, num_workers: int = 0,
          max_per_clip: int | None = 1, silence_db: float | None = SILENCE_DB) -> TopK:
    """The ``k`` strongest activations of each channel of ``layer`` over ``dataset``, projected.

    Args:
        model: any model :class:`~audioconv.interpret.projector.Projector` accepts, or a Projector
            (then its mode, device and device copy of the model are used). Run in eval mode (its
            train/eval mode is restored afterwards); the model itself is never moved.
        dataset: a map-style dataset. For a model with a LogMel ``frontend`` (a SpectrogramCNN):
            waveforms at the model's sample rate, items ``(waveform (C, T), label, ...)`` or
            ``waveform`` (e.g. :class:`~audioconv.data.dataset.ManifestDataset`; use ``crop="center"``
            or ``"start"`` so clips are reproducible); shorter clips are zero-padded. Items
            ``(waveform, label, length)`` give the real (unpadded) length in
            samples. For any other model: log-mel items ``(1, F, T)`` or ``(F, T)`` of one length (or
            such tuples; a third element is the real length in frames). ``None`` items are skipped.
            With ``records`` (manifest rows) the clip ids and labels are filled in.
        layer: ``"conv1"`` … (``model.layer_names``) or a module name from ``model.named_modules()``.
        channels: channel indices to scan (default all).
        k: activations kept per channel (fewer if the dataset has fewer hit slots).
        batch_size: examples per forward pass of the scan, and projector inputs per call (each input
            is one example with a block of its hits; hits on one example share its forward pass).
        device: default CUDA if available, else CPU (a Projector's own device when one is given).
        mode: projection rule: ``"deconv"`` (default), ``"guided"`` or ``"gradient"`` (a Projector's own).
        progress: tqdm bars for the scan and the projections.
        num_workers: DataLoader workers for decoding.
        max_per_clip: hits per clip and unit (default 1, so the k hits come from k different clips;
            ``None``: no limit, the k strongest positions wherever they are).
        silence_db: a position counts only when its receptive field's centre frame is real (not
            padding) and not silent — its loudest mel bin more than ``silence_db`` dB above the
            clip's floor (:mod:`audioconv.interpret.frames`); ``None`` allows silent frames
            (padding stays excluded).

    Returns:
        :class:`TopK`. Scores are the layer's activations in the scan (float64 copies); the
        projections are computed from the same log-mel inputs the scan saw. Only activations above
        zero are hits; ``TopK.n_hits`` counts them per unit.
    """
    projector = _as_projector(model, mode, device)
    scan = scan_top_k(projector, dataset, layer, channels, k, batch_size, None, progress, num_workers,
                      max_per_clip, silence_db)
    kk = max(1, min(int(k), scan.n_candidates))
    hit = scan.keys[:, :kk] != _MISSING  # (K, kk)
    keys = scan.keys[:, :kk].masked_fill(~hit, 0)
    examples = np.where(hit, (keys >> _E_SHIFT).numpy(), -1)
    pos = np.stack([((keys >> _F_SHIFT) & ((1 << _F_SHIFT) - 1)).numpy(),
                    (keys & ((1 << _F_SHIFT) - 1)).numpy()], axis=-1)  # (K, kk, 2)
    pos[~hit.numpy()] = -1
    rfs, projections, patches = _project_hits(projector, scan, layer, pos, examples, batch_size, progress)
    info = [[_clip_info(dataset, int(e)) if e >= 0 else (None, None) for e in row] for row in examples]
    clip_ids = [[cid for cid, _ in row] for row in info]
    labels = [[lab for _, lab in row] for row in info]
    if all(lab is None for row in labels for lab in row):
        labels = None
    hz, seconds = projector.traced.axes(scan.n_mels, scan.t_max)
    scores = np.where(hit.numpy(), scan.scores[:, :kk].numpy(), 0.0)
    return TopK(layer=layer, mode=projector.mode, channels=np.asarray(scan.channels, dtype=np.int64),
                scores=scores, example_indices=examples.astype(np.int64), positions=pos.astype(np.int64),
                receptive_fields=rfs, projections=projections, patches=patches, clip_ids=clip_ids, labels=labels,
                hz=hz, seconds=seconds, n_examples=scan.n_examples, n_hits=hit.sum(1).numpy().astype(np.int64),
                max_per_clip=None if max_per_clip is None else int(max_per_clip),
                silence_db=None if silence_db is None else float(silence_db), n_silent=scan.n_silent)


def _project_hits(projector: Projector, scan: _Scan, layer: str, pos: np.ndarray, examples: np.ndarray,
                  batch_size: int, progress: bool):
    """Project every kept hit → (receptive fields ``(K, k, 4)``, projections ``[K][k]``, patches ``[K][k]``).

    Hits on the same example share one forward pass: each projector input row is one example with a
    block of up to ``kb`` (channel, position) hits (a short block is padded by repeating its last
    hit). Inputs of different lengths go in separate calls. Empty slots (example -1) stay ``None``.
    """
    n_k, kk = examples.shape
    rfs = np.zeros((n_k, kk, 4), dtype=np.int64)
    projections = [[None] * kk for _ in range(n_k)]
    patches = [[None] * kk for _ in range(n_k)]
    by_shape: dict[tuple, dict[int, list[tuple[int, int]]]] = {}
    for u in range(n_k):
        for r in range(kk):
            e = int(examples[u, r])
            if e >= 0:
                by_shape.setdefault(tuple(scan.inputs[e].shape), {}).setdefault(e, []).append((u, r))
    rows_per_call = max(1, int(batch_size))
    for by_example in by_shape.values():
        kb = _block_size([len(v) for v in by_example.values()])
        rows = [(e, hits[i:i + kb]) for e, hits in by_example.items() for i in range(0, len(hits), kb)]
        for lo in tqdm(range(0, len(rows), rows_per_call), disable=not progress, desc=f"project {layer}",
                       unit="batch"):
            chunk = rows[lo:lo + rows_per_call]
            blocks = [blk + [blk[-1]] * (kb - len(blk)) for _, blk in chunk]
            x = torch.stack([scan.inputs[e] for e, _ in chunk])  # (B, 1, F, T)
            chan = torch.as_tensor([[scan.channels[u] for u, _ in blk] for blk in blocks], dtype=torch.long)
            where = torch.as_tensor(np.array([[pos[u, r] for u, r in blk] for blk in blocks]), dtype=torch.long)
            proj = projector.project(x, layer, chan, position=where, batch_size=len(chunk), progress=False,
                                     input_kind="logmel")
            maps = proj.maps.numpy()  # (B, kb, F, T)
            spec = proj.spectrograms.numpy()  # (B, F, T)
            fields = proj.receptive_fields.numpy().astype(np.int64)  # (B, kb, 4)
            for j, (_, blk) in enumerate(chunk):
                for q, (u, r) in enumerate(blk):
                    f0, f1, t0, t1 = (int(v) for v in fields[j, q])
                    rfs[u, r] = (f0, f1, t0, t1)
                    projections[u][r] = maps[j, q, f0:f1, t0:t1].copy()
                    patches[u][r] = spec[j, f0:f1, t0:t1].copy()
    return rfs, projections, patches
