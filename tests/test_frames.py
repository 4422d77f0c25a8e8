"""Which frames count (real, not silent) and the projector's "max" restricted to them, against
brute force on the feature map and the documented rule computed by hand."""
import numpy as np
import pytest
import torch

from audioconv.features import LogMel
from audioconv.interpret.frames import active_frames, allowed_positions, centre_frames
from audioconv.interpret.projector import Projector
from audioconv.interpret.receptive_field import receptive_field

from _tiny_cnn import FRONTEND, SR, tiny_cnn


def _burst(seconds=1.0, start_s=0.3, length_s=0.25, seed=0):
    """Digital silence with a burst of a tone in noise at ``start_s`` (1, T)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * SR))
    a, n = int(start_s * SR), int(length_s * SR)
    t = np.arange(n) / SR
    x[a:a + n] = 0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(n)
    return torch.tensor(x, dtype=torch.float32)[None], (a, a + n)


def test_silent_frames_are_the_ones_that_see_only_zeros():
    wav, (a, b) = _burst()
    lm = LogMel(**FRONTEND, sample_rate=SR)
    logmel = lm(wav[None])  # (1, 1, F, T)
    frames = active_frames(logmel)[0].numpy()
    hop, half = FRONTEND["hop_length"], FRONTEND["n_fft"] // 2
    centre = np.arange(logmel.shape[-1]) * hop
    only_zeros = (centre + half <= a) | (centre - half >= b)  # the window holds no sample of the burst
    inside = (centre - half >= a) & (centre + half <= b)
    assert not frames[only_zeros].any()
    assert frames[inside].all()
    # stationary noise everywhere: no frame is silent
    noise = torch.tensor(np.random.default_rng(1).standard_normal(SR) * 0.1, dtype=torch.float32)[None, None]
    assert active_frames(lm(noise)).all()
    # a file of zeros: everything is silent; silence_db=None keeps it (only padding goes)
    zeros = lm(torch.zeros(1, 1, SR))
    assert not active_frames(zeros).any()
    kept = active_frames(zeros, n_frames=torch.tensor([30]), silence_db=None)[0]
    assert kept[:30].all() and not kept[30:].any()


def test_the_floor_is_taken_over_the_real_frames_only():
    """A clip of quiet noise padded with zeros: with the true length the noise is not silent."""
    lm = LogMel(**FRONTEND, sample_rate=SR)
    x = torch.zeros(1, 1, SR)
    x[..., : SR // 2] = 1e-3 * torch.randn(SR // 2, generator=torch.Generator().manual_seed(0))
    logmel = lm(x)
    n_real = lm.n_frames(SR // 2)
    frames = active_frames(logmel, n_frames=torch.tensor([n_real]))[0]
    assert frames[: n_real - 4].all() and not frames[n_real:].any()
    with pytest.raises(ValueError, match="silence_db"):
        active_frames(logmel, silence_db=-1)


def test_centre_frames_agree_with_receptive_field():
    model = tiny_cnn(0)
    proj = Projector(model, device="cpu")
    logmel = proj.to_logmel(_burst()[0][None])
    path = proj.path("conv2", logmel)
    H, W = proj.feature_maps(logmel, "conv2", input_kind="logmel").shape[-2:]
    centre = centre_frames(path, (H, W), logmel.shape[-2:])
    for f, t in [(0, 0), (3, 7), (H - 1, W - 1), (1, W // 2)]:
        f0, f1, t0, t1 = receptive_field(model, "conv2", f, t, input_size=tuple(logmel.shape[-2:]))
        assert int(centre[f, t]) == (t0 + t1 - 1) // 2


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_projector_max_over_allowed_frames_matches_brute_force(layer):
    model = tiny_cnn(0)
    wavs = torch.cat([_burst(start_s=0.1)[0][None], _burst(start_s=0.6, seed=1)[0][None]])  # (2, 1, T)
    proj = Projector(model, device="cpu")
    logmel = proj.to_logmel(wavs)
    frames = active_frames(logmel)
    res = proj.project(wavs, layer, None, frames=frames, progress=False)
    fmaps = proj.feature_maps(wavs, layer)  # (2, C, H, W)
    H, W = fmaps.shape[-2:]
    size = tuple(logmel.shape[-2:])
    centre = [(lambda box: (box[2] + box[3] - 1) // 2)(receptive_field(model, layer, 0, t, input_size=size))
              for t in range(W)]  # a column's time box does not depend on the row
    for b in range(2):
        ok = frames[b].numpy()
        for c in range(fmaps.shape[1]):
            best, where = -np.inf, None
            for f in range(H):  # row-major: the first maximum wins
                for t in range(W):
                    if ok[centre[t]] and float(fmaps[b, c, f, t]) > best:
                        best, where = float(fmaps[b, c, f, t]), [f, t]
            assert res.positions[b, c].tolist() == where
            assert float(res.activations[b, c]) == pytest.approx(best, rel=1e-6)
    explicit = proj.project(wavs, layer, None, position=res.positions, progress=False)
    torch.testing.assert_close(res.maps, explicit.maps)
    with pytest.raises(ValueError, match="no position"):
        proj.project(wavs, layer, [0], frames=torch.zeros_like(frames), progress=False)
    with pytest.raises(ValueError, match="frames must be"):
        proj.project(wavs, layer, [0], frames=frames[:1], progress=False)


@pytest.mark.parametrize("layer", ["head.gap", "head.fc"])
def test_a_unit_that_sees_the_whole_clip_is_allowed_when_any_frame_of_it_is(layer):
    """After a global pool (and at the linear head) every position's receptive field is the whole
    clip, whose centre frame says nothing about the unit: a burst away from the middle of the clip
    leaves the centre silent, and such clips were left out ("no non-silent frames") or refused by
    ``project``. Now they count when any frame does; a clip of digital silence still does not."""
    model = tiny_cnn(0)
    proj = Projector(model, device="cpu")
    wavs = torch.cat([_burst(start_s=0.05)[0][None], torch.zeros(1, 1, SR)])  # a burst at 0.05-0.3 s; zeros
    logmel = proj.to_logmel(wavs)
    frames = active_frames(logmel)
    T = logmel.shape[-1]
    assert frames[0].any() and not frames[0, (T - 1) // 2] and not frames[1].any()
    allowed = allowed_positions(proj.path(layer, logmel), frames, (1, 1), logmel.shape[-2:])
    assert allowed[:, 0, 0].tolist() == [True, False]
    res = proj.project(wavs[:1], layer, [0, 1], frames=frames[:1], progress=False)
    fmap = proj.feature_maps(wavs[:1], layer)  # (1, C, 1, 1)
    assert res.positions[0].tolist() == [[0, 0], [0, 0]]
    torch.testing.assert_close(res.activations[0], fmap[0, :2, 0, 0])
