"""Top-k activations of each unit over a dataset, each projected back to the input (Zeiler & Fergus Fig. 2).

:func:`top_k` runs one batched pass without gradients over the dataset, keeping for every channel
of a layer its ``k`` strongest activations over all examples *and* all feature-map positions
(a running top-k merge: memory ``O(channels * k)`` plus the log-mel of the examples currently
in some channel's top-k). Each kept ``(example, channel, position)`` is then projected with the
:class:`~audioconv.interpret.projector.Projector` and cropped to the position's receptive field, next
to the input patch under that receptive field.

Ordering: descending activation; ties are broken by lower example index, then lower feature-map
row ``f``, then column ``t`` — the same order a stable sort of all activations would give.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TopK", "top_k", "scan_top_k", "select_channels"]

_F_SHIFT = 20  # key = example << 40 | f << 20 | t  (feature maps up to 2^20 cells per axis)
_E_SHIFT = 40


# ---- result -------------------------------------------------------------------------------------
@dataclass
class TopK:
    """The ``k`` strongest activations of each of ``K`` channels of ``layer`` over a dataset.

    Row ``u`` describes channel ``channels[u]``; column ``r`` is its rank-``r`` activation (0 =
    strongest). ``k`` may be smaller than asked when the dataset has fewer positions.

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
        hz: ``(F,)`` centre frequency (Hz) of each mel bin of the inputs.
        seconds: ``(T,)`` centre time (s) of each frame of the longest input.
        n_examples: examples scanned.
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
    hz: np.ndarray = field(repr=False)
    seconds: np.ndarray = field(repr=False)
    n_examples: int = 0

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    def to_dict(self) -> dict:
        """JSON-ready index (no pixel arrays): per unit, per rank, score / clip / position / receptive field with Hz and s."""
        units = []
        for u, ch in enumerate(self.channels):
            items = []
            for r in range(self.k):
                f0, f1, t0, t1 = (int(v) for v in self.receptive_fields[u, r])
                items.append({
                    "rank": r,
                    "activation": float(self.scores[u, r]),
                    "example": int(self.example_indices[u, r]),
                    "clip_id": self.clip_ids[u][r],
                    "label": None if self.labels is None else self.labels[u][r],
                    "position": [int(v) for v in self.positions[u, r]],
                    "receptive_field": [f0, f1, t0, t1],
                    "hz_range": [float(self.hz[f0]), float(self.hz[f1 - 1])],
                    "seconds_range": [float(self.seconds[t0]), float(self.seconds[t1 - 1])],
                })
            units.append({"channel": int(ch), "top": items})
        return {"layer": self.layer, "mode": self.mode, "k": self.k, "n_examples": int(self.n_examples),
                "units": units}


# ---- helpers ------------------------------------------------------------------------------------
def select_channels(model: nn.Module, layer: str, channels) -> list[int]:
    """Validate ``channels`` (``None`` = all, an int, or a sequence) for ``layer``; returns a list.

    Raises:
        ValueError: unknown layer (listing valid layers) or a channel outside ``0..n-1``.
    """
    n = model.n_channels(layer)  # raises a ValueError listing valid layers
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


class _Stop(Exception):
    """Raised by the feature hook to skip the layers after the one scanned."""


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return i, self.dataset[i]


def _collate_indexed(batch):
    """``[(index, item)]`` → ``(indices (B,), waveforms (B, C, T) zero-padded)``; ``None`` items dropped."""
    idx, waves = [], []
    for i, item in batch:
        if item is None:
            continue
        wav = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(wav, torch.Tensor):
            raise ValueError(f"dataset item {i} is not a waveform tensor or (waveform, label, ...) tuple")
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        idx.append(i)
        waves.append(wav)
    if not waves:
        return torch.zeros(0, dtype=torch.long), None
    t_max = max(w.shape[-1] for w in waves)
    out = torch.zeros(len(waves), waves[0].shape[0], t_max, dtype=torch.float32)
    for j, w in enumerate(waves):
        if w.shape[0] != out.shape[1]:
            raise ValueError(f"dataset item {idx[j]} has {w.shape[0]} channels, others {out.shape[1]}")
        out[j, :, : w.shape[-1]] = w
    return torch.as_tensor(idx, dtype=torch.long), out


def _sort_desc(scores: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the ``k`` best ``(score desc, key asc)`` of ``(K, N)`` scores/keys."""
    order = torch.argsort(keys, dim=1, stable=True)
    scores, keys = scores.gather(1, order), keys.gather(1, order)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :k]
    return scores.gather(1, order), keys.gather(1, order)


def _batch_top_k(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(K, k)`` of the ``k`` largest of each row of ``flat`` ``(K, N)``, ties → lower index."""
    vals, idx = flat.topk(k, dim=1)
    thr = vals[:, -1:]
    n_ge = (flat >= thr).sum(dim=1)
    for row in torch.nonzero(n_ge > k).flatten().tolist():  # ties at the threshold: keep the first ones
        gt = torch.nonzero(flat[row] > thr[row]).flatten()
        eq = torch.nonzero(flat[row] == thr[row]).flatten()[: k - gt.numel()]
        idx[row] = torch.cat([gt, eq])
    return idx


def _forward_features(model: nn.Module, logmel: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Run ``model.features`` on log-mel up to ``module`` and return its output."""
    captured = {}

    def hook(_m, _inp, out):
        captured["out"] = out
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model.features(logmel)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "out" not in captured:
        raise ValueError("the feature module was not reached by model.features")
    return captured["out"]


def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        return p.dtype
    return torch.float32


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` if its parameters are on ``device``, else a copy moved there (the caller's model is not moved)."""
    p = next(iter(model.parameters()), None)
    if p is None or p.device == device:
        return model
    return copy.deepcopy(model).to(device)


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---- the scan -----------------------------------------------------------------------------------
@dataclass
class _Scan:
    channels: list
    scores: torch.Tensor  # (K, k)
    keys: torch.Tensor  # (K, k) int64
    inputs: dict  # example index -> (1, F, T) log-mel on CPU
    n_examples: int
    t_max: int


def scan_top_k(model: nn.Module, dataset, layer: str, channels=None, k: int = 9, batch_size: int = 32,
               device=None, progress: bool = True, num_workers: int = 0) -> _Scan:
    """The running top-k pass of :func:`top_k` without the projections (see there for the arguments)."""
    chans = select_channels(model, layer, channels)
    if not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    dev = _resolve_device(device)
    model = _on_device(model, dev)
    module = model.feature_module(layer)
    dtype = _param_dtype(model)
    ch_index = torch.as_tensor(chans, device=dev)
    n_k = len(chans)
    best_s = torch.empty(n_k, 0, dtype=torch.float64)
    best_k = torch.empty(n_k, 0, dtype=torch.long)
    inputs: dict[int, torch.Tensor] = {}
    n_seen, t_max = 0, 0
    loader = torch.utils.data.DataLoader(_Indexed(dataset), batch_size=int(batch_size), shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate_indexed)
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            for idx, wavs in tqdm(loader, disable=not progress, desc=f"top-{k} {layer}", unit="batch"):
                if wavs is None:
                    continue
                logmel = model.frontend(wavs.to(dev)).to(dtype)  # (B, 1, F, T)
                acts = _forward_features(model, logmel, module).index_select(1, ch_index)  # (B, K, Fl, Tl)
                b, _, n_f, n_t = acts.shape
                if max(n_f, n_t) >= 1 << _F_SHIFT:
                    raise ValueError(f"feature map {n_f}×{n_t} too large for the top-k index (max {1 << _F_SHIFT})")
                flat = acts.permute(1, 0, 2, 3).reshape(n_k, -1).double().cpu()  # (K, B*Fl*Tl) in key order
                kk = min(int(k), flat.shape[1])
                pick = _batch_top_k(flat, kk)
                ex = idx[pick // (n_f * n_t)]
                rem = pick % (n_f * n_t)
                keys = (ex << _E_SHIFT) | ((rem // n_t) << _F_SHIFT) | (rem % n_t)
                best_s, best_k = _sort_desc(torch.cat([best_s, flat.gather(1, pick)], 1),
                                            torch.cat([best_k, keys], 1), int(k))
                kept = set((best_k >> _E_SHIFT).flatten().tolist())
                for j, e in enumerate(idx.tolist()):
                    if e in kept:
                        inputs[e] = logmel[j].detach().cpu()
                for e in [e for e in inputs if e not in kept]:
                    del inputs[e]
                n_seen += b
                t_max = max(t_max, logmel.shape[-1])
    finally:
        for m, flag in flags.items():
            m.training = flag
    if n_seen == 0:
        raise ValueError("no usable examples in the dataset (all items were None)")
    return _Scan(chans, best_s, best_k, inputs, n_seen, t_max)


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


def top_k(model: nn.Module, dataset, layer: str, channels=None, k: int = 9, batch_size: int = 32,
          device=None, mode: str = "deconv", progress: bool = True, num_workers: int = 0) -> TopK:
    """The ``k`` strongest activations of each channel of ``layer`` over ``dataset``, projected.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (``frontend``, ``features``,
            ``feature_module(layer)``, ``n_channels(layer)``). Run in eval mode (its train/eval
            mode is restored afterwards); if it is not on ``device`` a copy is moved there.
        dataset: a map-style dataset of waveforms at the model's sample rate: items ``(waveform (C, T),
            label, ...)`` or ``waveform`` (e.g. :class:`~audioconv.data.dataset.ManifestDataset`; use
            ``crop="center"`` or ``"start"`` so clips are reproducible). ``None`` items are skipped.
            With ``records`` (manifest rows) the clip ids and labels are filled in.
        layer: ``"conv1"`` … (``model.layer_names``).
        channels: channel indices to scan (default all).
        k: activations kept per channel (fewer if the dataset has fewer positions).
        batch_size: examples per forward pass of the scan, and projector inputs per call (each input
            is one example with a block of its hits; hits on one example share its forward pass).
        device: default CUDA if available, else CPU.
        mode: projection rule: ``"deconv"``, ``"guided"`` or ``"gradient"``.
        progress: tqdm bars for the scan and the projections.
        num_workers: DataLoader workers for decoding.

    Returns:
        :class:`TopK`. Scores are the layer's activations in the scan (float64 copies); the
        projections are computed from the same log-mel inputs the scan saw.
    """
    from audioconv.interpret.projector import Projector

    scan = scan_top_k(model, dataset, layer, channels, k, batch_size, device, progress, num_workers)
    dev = _resolve_device(device)
    projector = Projector(model, mode=mode, device=dev)
    n_k, kk = scan.scores.shape
    examples = (scan.keys >> _E_SHIFT).numpy()
    pos = np.stack([((scan.keys >> _F_SHIFT) & ((1 << _F_SHIFT) - 1)).numpy(),
                    (scan.keys & ((1 << _F_SHIFT) - 1)).numpy()], axis=-1)  # (K, k, 2)
    rfs = np.zeros((n_k, kk, 4), dtype=np.int64)
    projections = [[None] * kk for _ in range(n_k)]
    patches = [[None] * kk for _ in range(n_k)]
    # Hits on the same example share one forward pass: each projector input row is one example
    # with a block of up to `kb` (channel, position) hits (a short block is padded by repeating its
    # last hit). Inputs of different lengths go in separate calls.
    by_shape: dict[tuple, dict[int, list[tuple[int, int]]]] = {}
    for u in range(n_k):
        for r in range(kk):
            e = int(examples[u, r])
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
            maps = _to_numpy(proj.maps)  # (B, kb, F, T)
            spec = _to_numpy(proj.spectrograms)  # (B, F, T)
            fields = _to_numpy(proj.receptive_fields).astype(np.int64)  # (B, kb, 4)
            for j, (_, blk) in enumerate(chunk):
                for q, (u, r) in enumerate(blk):
                    f0, f1, t0, t1 = (int(v) for v in fields[j, q])
                    rfs[u, r] = (f0, f1, t0, t1)
                    projections[u][r] = maps[j, q, f0:f1, t0:t1].copy()
                    patches[u][r] = spec[j, f0:f1, t0:t1].copy()
    clip_ids = [[_clip_info(dataset, int(e))[0] for e in row] for row in examples]
    labels = [[_clip_info(dataset, int(e))[1] for e in row] for row in examples]
    if all(lab is None for row in labels for lab in row):
        labels = None
    frontend = model.frontend
    return TopK(layer=layer, mode=mode, channels=np.asarray(scan.channels, dtype=np.int64),
                scores=scan.scores.numpy(), example_indices=examples.astype(np.int64), positions=pos.astype(np.int64),
                receptive_fields=rfs, projections=projections, patches=patches, clip_ids=clip_ids, labels=labels,
                hz=np.asarray(frontend.mel_hz(), dtype=np.float64), seconds=np.asarray(frontend.frame_s(scan.t_max)),
                n_examples=scan.n_examples)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)
