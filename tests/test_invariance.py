"""`audioconv.interpret.invariance` against formulas: a stride-1 convolution is exactly equivariant to a
time shift away from the borders; global pooling is exactly invariant to a circular shift; a shift by a
multiple of a layer's stride moves a residual network's and BC-ResNet's maps exactly; distances are
symmetric and zero at the identity; the normalisation equals a brute-force sum over pairs of clips; the
pitch-shift warp follows librosa's HTK mel scale. And the figure's axes carry units, the CLI and the
run report."""
import json
import math

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from audioconv.augment import Gain
from audioconv.cli import main
from audioconv.features import LogMel, LogMelConfig
from audioconv.interpret import TracedModel
from audioconv.interpret.invariance import DEFAULT_AMOUNTS, LOGITS, invariance
from audioconv.plots.invariance import plot_invariance
from _residual import functional_resnet, resnet_cnn
from _tiny_cnn import FRONTEND, SR, tiny_cnn
from test_interpret_residual import tiny_bcresnet

HOP_S = FRONTEND["hop_length"] / SR  # 10 ms


class OneConv(nn.Module):
    """LogMel front end → one 3×3 convolution, stride 1 → ReLU → global mean → linear."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.frontend = LogMel(LogMelConfig(sample_rate=SR, **FRONTEND))
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def classify(self, logmel):
        return self.fc(self.pool(self.relu(self.conv(logmel))).flatten(1))

    def forward(self, wav):
        return self.classify(self.frontend(wav))


def _noise(n=4, seconds=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, 1, int(seconds * SR), generator=g)


def _valid_frames(lo: int, hi: int, n_frames: int) -> set:
    """Frames whose analysis window (win_length samples around j·hop) lies inside samples [lo, hi): brute force."""
    half, hop = FRONTEND["win_length"] // 2, FRONTEND["hop_length"]
    return {j for j in range(n_frames) if j * hop - half >= lo and j * hop + half <= hi}


# ---- exact equivariance of a stride-1 convolution ---------------------------------------------------
def test_one_convolution_is_exactly_equivariant_to_time_shift_away_from_the_borders():
    model, x = OneConv().eval(), _noise()
    amounts = [-0.03, -0.01, 0.0, 0.02, 0.05]  # whole hops
    r = invariance(model, x, "time_shift", amounts, ["conv", "relu"], progress=False)
    eq, _ = r.equivariance
    inv, _ = r.invariance
    assert np.abs(eq[:2]).max() < 1e-5  # conv and relu: the map moved with the input, exactly
    assert (inv[:2, [0, 1, 3, 4]] > 0.3).all()  # ... while it did change in place
    assert r.exact[:2].all() and r.border_rule[:2] == ["receptive field"] * 2
    # cells compared: positions whose 3-frame receptive field lies inside frames valid in both clips
    T, n_frames = x.shape[-1], x.shape[-1] // FRONTEND["hop_length"] + 1
    for ai, a in enumerate(amounts):
        m = round(a * SR)
        v_t = _valid_frames(max(0, m), min(T, T + m), n_frames)
        v_o = _valid_frames(max(0, -m), min(T, T - m), n_frames)
        both = v_t & v_o
        cols_inv = [p for p in range(n_frames) if {p - 1, p, p + 1} <= both]
        shift = m // FRONTEND["hop_length"]
        cols_eq = [p for p in range(n_frames) if {p - 1, p, p + 1} <= v_t and {p - 1 - shift, p - shift, p + 1 - shift} <= v_o]
        rows = [f for f in range(FRONTEND["n_mels"])]  # frequency is not moved: every row
        assert r.cells[0, ai] == len(cols_inv) * len(rows)
        assert r.eq_cells[0, ai] == len(cols_eq) * len(rows)
    # without the border rule the shifted map differs: the zero fill and the STFT's edge frames
    traced = TracedModel(model, "cpu")
    moved = traced.feature_maps(traced.to_logmel(torch.roll(x, 160, -1) * (torch.arange(x.shape[-1]) >= 160)), "conv")
    orig = traced.feature_maps(traced.to_logmel(x), "conv")
    assert (moved["conv"][..., 2:] - orig["conv"][..., :-2]).abs().max() > 1e-2


def test_log_mel_inputs_shift_whole_frames_and_strided_layers_are_exact_at_multiples_of_their_stride():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 2)).double().eval()
    x = torch.randn(5, 1, 10, 48, dtype=torch.float64)
    amounts = [-0.04, -0.03, 0.0, 0.01, 0.02, 0.06]  # frames -4, -3, 0, 1, 2, 6 at 10 ms
    r = invariance(model, x, "time_shift", amounts, ["1", "3"], frame_s=0.01, progress=False)
    eq, _ = r.equivariance
    assert np.abs(eq[0]).max() < 1e-12  # stride 1: every whole-frame shift
    even = [0, 2, 4, 5]  # -4, 0, 2, 6 frames: multiples of layer 3's stride 2
    assert np.abs(eq[1, even]).max() < 1e-12 and r.exact[1, even].all()
    assert not r.exact[1, [1, 3]].any() and (eq[1, [1, 3]] > 0.05).all()  # odd shifts cannot be undone
    assert r.stride[:2] == [1, 2] and r.settings["shift_frames"] == [-4, -3, 0, 1, 2, 6]


# ---- exact invariance of global pooling to a circular shift ---------------------------------------
def _circular_pool_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3)).double().eval()


def test_a_model_ending_in_global_pooling_is_exactly_invariant_to_circular_time_shift():
    model = _circular_pool_model()
    x = torch.randn(5, 1, 12, 40, dtype=torch.float64)
    amounts = [-0.13, -0.05, 0.0, 0.07, 0.2]
    r = invariance(model, x, "time_shift", amounts, ["2"], shift_mode="roll", frame_s=0.01, progress=False)
    inv, _ = r.invariance
    assert r.layers == ["2", LOGITS]
    assert np.abs(inv).max() < 1e-10
    assert np.abs(r.p_true - r.p_original[:, None]).max() < 1e-12
    zero = invariance(model, x, "time_shift", amounts, ["2"], frame_s=0.01, progress=False)  # content leaves
    assert zero.invariance[0][1, [0, 1, 3, 4]].min() > 1e-3


# ---- symmetric, zero at the identity ------------------------------------------------------------
def test_distances_are_symmetric_and_zero_at_amount_zero():
    model = resnet_cnn()
    x = torch.randn(4, 1, 16, 40, dtype=torch.float64)
    layers = ["stem.2", "block1.relu2", "block2.relu2"]
    a = invariance(model, x, "time_shift", [0.0, 0.05], layers, shift_mode="roll", frame_s=0.01, progress=False)
    y = torch.roll(x, 5, dims=-1)  # the same circular shift, done independently
    b = invariance(model, y, "time_shift", [-0.05, 0.0], layers, shift_mode="roll", frame_s=0.01, progress=False)
    np.testing.assert_allclose(a.clip_invariance[:, :, 1], b.clip_invariance[:, :, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.clip_equivariance[:, :-1, 1], b.clip_equivariance[:, :-1, 0], rtol=1e-9)
    assert (a.clip_invariance[:, :, 0] == 0).all() and (a.clip_equivariance[:, :-1, 0] == 0).all()
    assert (b.clip_invariance[:, :, 1] == 0).all()
    assert (a.p_true[:, 0] == a.p_original).all()
    g = invariance(tiny_cnn(), _noise(), "gain", [6.0], progress=False)  # gain: x → 2x and back
    h = invariance(tiny_cnn(), Gain(6.0, p=1.0)(_noise()), "gain", [-6.0], progress=False)
    np.testing.assert_allclose(g.clip_invariance, h.clip_invariance, rtol=2e-3)


# ---- the normalisation -----------------------------------------------------------------------------
def test_normalised_distance_equals_a_brute_force_sum_over_pairs_of_clips():
    model, x = tiny_cnn(), _noise(5, seed=3) * torch.linspace(0.2, 2.0, 5)[:, None, None]
    r = invariance(model, x, "gain", [-12.0, 0.0, 9.0], ["conv1", "conv2"], batch_size=2, progress=False)
    traced = TracedModel(model, "cpu")
    for ai, g in enumerate([-12.0, 0.0, 9.0]):
        phi = traced.feature_maps(traced.to_logmel(x), ["conv1", "conv2"])
        psi = traced.feature_maps(traced.to_logmel(x * 10 ** (g / 20)), ["conv1", "conv2"])
        phi[LOGITS], psi[LOGITS] = traced.logits(traced.to_logmel(x)), traced.logits(traced.to_logmel(x * 10 ** (g / 20)))
        for li, name in enumerate(["conv1", "conv2", LOGITS]):
            a, b = phi[name].double().flatten(1).numpy(), psi[name].double().flatten(1).numpy()
            pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
            r2 = 0.5 * (np.mean([np.sum((a[i] - a[j]) ** 2) for i, j in pairs])
                        + np.mean([np.sum((b[i] - b[j]) ** 2) for i, j in pairs]))
            expected = np.sqrt(np.sum((b - a) ** 2, axis=1) / r2)
            np.testing.assert_allclose(r.clip_invariance[:, li, ai], expected, rtol=1e-4, atol=1e-7)
        probs = torch.softmax(psi[LOGITS].double(), 1)
        np.testing.assert_allclose(r.p_true[:, ai], probs[torch.arange(5), r.targets].numpy(), rtol=1e-5)
    assert r.target_source == "predicted" and np.isnan(r.clip_equivariance).all()


# ---- residual models ------------------------------------------------------------------------------
def test_residual_and_bcresnet_maps_move_exactly_with_shifts_by_multiples_of_their_stride():
    model = resnet_cnn()
    x = torch.randn(4, 1, 16, 64, dtype=torch.float64)
    names = TracedModel(model, "cpu").layer_names
    r = invariance(model, x, "time_shift", [-0.04, 0.02, 0.04], names, frame_s=0.01, progress=False)
    eq, _ = r.equivariance
    strided = [s for s in r.stride if s]
    assert max(strided) > 1  # the test sees strided blocks
    for li, (s, rule) in enumerate(zip(r.stride, r.border_rule)):
        for ai, frames in enumerate((-4, 2, 4)):
            if s and rule == "receptive field" and frames % s == 0:
                assert eq[li, ai] < 1e-10, (r.layers[li], frames)
    bc = tiny_bcresnet()
    wav = _noise(4, seconds=1.2, seed=5).double()
    r = invariance(bc, wav, "time_shift", [-0.02, 0.01, 0.03], progress=False)
    eq, _ = r.equivariance
    fitted = [li for li, rule in enumerate(r.border_rule) if rule == "receptive field"]
    assert len(fitted) >= 3 and set(r.stride[li] for li in fitted) == {1}  # BC-ResNet keeps every frame
    assert np.abs(eq[fitted]).max() < 1e-5


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_a_users_model_of_functional_ops_moves_exactly_with_shifts_by_multiples_of_its_stride():
    """The user's own model (F.relu, F.max_pool2d, an even 'same' kernel, a broadcast gate, an in-place
    F.relu_, F.avg_pool2d with padding, torch.tanh), probed at its operations: a time shift by a multiple
    of a layer's stride moves its map exactly; one that is not a multiple leaves a distance."""
    model = functional_resnet()
    x = torch.randn(4, 1, 16, 64, dtype=torch.float64)
    names = [":relu#1", ":max_pool#1", "conv2", ":relu#2", ":avg_pool#1", ":tanh#1", ":sub#1"]
    frames = (-8, -3, -2, 4, 8)
    r = invariance(model, x, "time_shift", [f / 100 for f in frames], names, frame_s=0.01, progress=False)
    eq, _ = r.equivariance
    assert r.stride == [1, 2, 2, 2, 4, 4, 4, None]  # 2×2 max pool, then 2×2 average pool
    assert r.border_rule[:-1] == ["receptive field"] * len(names)
    for li, s in enumerate(r.stride[:-1]):
        for ai, f in enumerate(frames):
            if f % s == 0:
                assert eq[li, ai] < 1e-10 and r.exact[li, ai], (names[li], f)
            else:
                assert not r.exact[li, ai] and eq[li, ai] > 0.3, (names[li], f)


def test_pitch_shift_moves_rows_along_the_htk_mel_scale_and_a_tone_is_place_coded_in_frequency():
    model = OneConv().eval()
    t = torch.arange(int(0.5 * SR)) / SR
    x = torch.stack([0.3 * torch.sin(2 * torch.pi * f * t)[None] for f in (400.0, 700.0, 1100.0)])
    r = invariance(model, x, "pitch_shift", [-3.0, 0.0, 4.0], ["conv"], progress=False)
    c = LogMelConfig(sample_rate=SR, **FRONTEND)
    mel = np.linspace(librosa.hz_to_mel(c.f_min_hz, htk=True), librosa.hz_to_mel(c.f_max, htk=True), c.n_mels + 2)
    info = r.to_dict()["layers"]["conv"]
    for ai, k in enumerate([-3.0, 0.0, 4.0]):
        hz = librosa.mel_to_hz(mel[1:-1], htk=True)  # conv rows are mel bins (stride 1)
        src = (librosa.hz_to_mel(hz / 2 ** (k / 12), htk=True) - mel[0]) / (mel[1] - mel[0]) - 1
        disp = np.arange(c.n_mels) - src
        v_t = [b for b in range(c.n_mels) if librosa.mel_to_hz(mel[b], htk=True) / 2 ** (k / 12) >= c.f_min_hz - 1e-6
               and librosa.mel_to_hz(mel[b + 2], htk=True) / 2 ** (k / 12) <= c.f_max + 1e-6]
        rows = [b for b in v_t if b - 1 >= min(v_t) and b + 1 <= max(v_t)]
        keep = [b for b in rows if 0 <= b - round(disp[b]) < c.n_mels]
        assert info["displacement_positions"][ai] == pytest.approx(np.mean(disp[keep]), abs=0.2)
    inv, eq = r.invariance[0], r.equivariance[0]
    assert eq[0, 0] < 0.5 * inv[0, 0] and eq[0, 2] < 0.5 * inv[0, 2]  # the tone's map moved up or down


# ---- the figure ---------------------------------------------------------------------------------
@pytest.mark.parametrize("transform,unit", [("time_shift", "(ms)"), ("pitch_shift", "(semitones)"), ("gain", "(dB)"),
                                            ("reverb", "(s)"), ("noise", "(dB)")])
def test_figure_axes_carry_the_units(transform, unit):
    amounts = {"time_shift": [-0.02, 0.0, 0.03], "pitch_shift": [-2.0, 0.0, 2.0], "gain": [-6.0, 0.0, 6.0],
               "reverb": [0.0, 0.3], "noise": [10.0, math.inf]}[transform]
    r = invariance(tiny_cnn(), _noise(3), transform, amounts, progress=False)
    fig = plot_invariance(r)
    axes = fig.axes
    assert len(axes) == (3 if transform in ("time_shift", "pitch_shift") else 2)
    assert all(unit in ax.get_xlabel() for ax in axes)
    assert "between-clip" in axes[0].get_ylabel() and "probability" in axes[-1].get_ylabel()
    labels = [line.get_label() for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels[:2] == ["conv1", "conv2"] and labels[2].startswith("logits")
    if transform == "time_shift":  # ms: the 30 ms shift is drawn at x = 30
        assert max(axes[0].get_lines()[0].get_xdata()) == pytest.approx(30.0)
    if transform == "noise":  # the clean clip gets a tick of its own
        assert "clean" in [t.get_text() for t in axes[0].get_xticklabels()]


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    (dict(inputs="one"), "at least 2 clips"),
    (dict(transform="speed"), "transform must be one of"),
    (dict(amounts=[0.6]), "not shorter than the clips"),
    (dict(amounts=[float("nan")]), "must be numbers"),
    (dict(amounts=[]), "amounts is empty"),
    (dict(transform="noise", amounts=[-math.inf]), "not finite"),
    (dict(transform="pitch_shift", amounts=[30.0]), "within ±24"),
    (dict(transform="reverb", amounts=[-0.1]), "RT60"),
    (dict(targets=[0, 1]), "targets must be 4 class indices"),
    (dict(targets=[0, 1, 5, 0]), "class indices in 0..1"),
    (dict(layers=["conv9"]), "unknown layer|conv9"),
    (dict(inputs="logmel", transform="gain", amounts=[3.0]), "acts on waveforms"),
    (dict(transform="speed", amounts=None), "transform must be one of"),
    (dict(batch_size=0), "batch_size must be >= 1, got 0"),
])
def test_bad_input_is_a_one_line_value_error(kwargs, match):
    args = dict(model=tiny_cnn(), inputs=_noise(4), transform="time_shift", amounts=[0.01], progress=False)
    args.update(kwargs)
    if args["inputs"] == "one":
        args["inputs"] = _noise(1)
    elif args["inputs"] == "logmel":
        args["inputs"] = torch.randn(4, 1, 16, 51)
    with pytest.raises(ValueError, match=match) as e:
        invariance(**args)
    assert "\n" not in str(e.value)


# ---- command line and report --------------------------------------------------------------------
@pytest.fixture()
def run_folder(tmp_path):
    from audioconv.models.registry import describe
    from audioconv.training.checkpoint import save_checkpoint

    t = np.arange(int(0.5 * SR)) / SR
    rows = []
    for i, f in enumerate((500.0, 1200.0, 2400.0, 800.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) * (t > 0.1) + 0.01 * np.random.default_rng(i).standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2], "split": "test"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = tiny_bcresnet().float()
    spec, config = describe(model)
    ckpt = {"kind": "model", "model": model.state_dict(), "model_spec": spec, "model_config": config,
            "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}}
    save_checkpoint(tmp_path / "run" / "best.pt", ckpt)
    return tmp_path


def test_cli_writes_figure_and_json_per_transform_equal_to_the_library(run_folder, capsys):
    root = run_folder
    rc = main(["invariance", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "m.jsonl"),
               "--transform", "time_shift,gain", "--layers", "stem,stage2", "--device", "cpu", "--no-progress"])
    assert rc == 0
    out = root / "run" / "invariance"
    summary = json.loads((out / "invariance_time_shift.json").read_text())
    assert (out / "invariance_time_shift.png").is_file() and (out / "invariance_gain.png").is_file()
    assert list(summary["layers"]) == ["stem", "stage2", LOGITS] and summary["n_clips"] == 4
    assert summary["targets"] == "labels" and summary["amounts"] == sorted(DEFAULT_AMOUNTS["time_shift"])
    from audioconv.io import audio
    from audioconv.training.checkpoint import load_model

    model, _ = load_model(root / "run" / "best.pt", "cpu")
    wavs = torch.stack([audio.load(root / f"tone{i}.wav")[0] for i in range(4)])
    r = invariance(model, wavs, "time_shift", None, ["stem", "stage2"], [0, 1, 0, 1], progress=False)
    np.testing.assert_allclose(summary["layers"]["stage2"]["invariance"], r.invariance[0][1], rtol=1e-5)
    assert "stem inv" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--transform", "time_shift,gain", "--amounts", "0,1"], "single --transform"),
    (["--transform", "speed"], "'speed' is unknown"),
    (["--transform", "gain", "--amounts", "3,x"], "comma list of numbers"),
    (["--transform", "time_shift", "--amounts", "2"], "not shorter than the clips"),
    (["--transform", "reverb", "--drr-db", "loud"], "--drr-db"),
    (["--transform", "gain", "--n-clips", "1"], "at least 2"),
    (["--transform", "gain", "--layers", "stem,conv9"], "conv9"),
    (["--transform", "gain", "--manifest", "EMPTY"], "has no clips"),
    (["--transform", "gain", "--split", "train"], "no clips with split"),
    (["--transform", "gain", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
])
def test_cli_bad_input_is_one_line_and_exit_2(run_folder, capsys, argv, match):
    root = run_folder
    (root / "empty.jsonl").write_text("")
    argv = [str(root / "empty.jsonl") if a == "EMPTY" else a for a in argv]
    rc = main(["invariance", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "m.jsonl"),
               "--device", "cpu", "--no-progress", "-o", str(root / "out")] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("audioconv invariance: error:")
    assert match in err


def test_run_report_shows_the_invariance_figures(run_folder):
    from audioconv.app.run_report import write_run_report

    root = run_folder
    main(["invariance", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "m.jsonl"),
          "--transform", "noise", "--amounts", "10,inf", "--device", "cpu", "--no-progress"])
    summary = write_run_report(root / "run", test=root / "m.jsonl", device="cpu", progress=False)
    page = (root / "run" / "report" / "index.html").read_text()
    assert 'id="invariance"' in page and "invariance_invariance_noise.png" in page
    assert (root / "run" / "report" / "assets" / "invariance_invariance_noise.png").is_file()
    assert summary["invariance"] == ["noise"]


def test_cli_probes_a_brought_model_like_the_library(run_folder):
    """``--model package.module:factory --weights --labels`` (the user's own backbone behind the package's
    front end): the JSON equals the library called on the model audioconv builds."""
    from audioconv.io import audio
    from audioconv.models.registry import build_model

    root = run_folder
    torch.manual_seed(0)
    model = build_model("_byo_models:backbone", 2, SR, frontend={"n_mels": FRONTEND["n_mels"]}).eval()
    torch.save(model.state_dict(), root / "w.pt")
    (root / "labels.txt").write_text("a\nb\n")
    rc = main(["invariance", "--model", "_byo_models:backbone", "--weights", str(root / "w.pt"), "--labels",
               str(root / "labels.txt"), "--sample-rate", str(SR), "--n-mels", str(FRONTEND["n_mels"]),
               "--manifest", str(root / "m.jsonl"), "--transform", "pitch_shift", "--amounts=-2,0,3",
               "--clip-s", "0.5", "--device", "cpu", "--no-progress", "-o", str(root / "byo")])
    assert rc == 0
    summary = json.loads((root / "byo" / "invariance_pitch_shift.json").read_text())
    wavs = torch.stack([audio.load(root / f"tone{i}.wav")[0] for i in range(4)])
    r = invariance(model, wavs, "pitch_shift", [-2.0, 0.0, 3.0], None, [0, 1, 0, 1], progress=False)
    assert list(summary["layers"]) == r.layers == ["backbone.3", "backbone.7", LOGITS]
    for li, name in enumerate(r.layers):
        np.testing.assert_allclose(summary["layers"][name]["invariance"], r.invariance[0][li], rtol=1e-5, atol=1e-7)
        if summary["layers"][name]["equivariance"] is not None:
            np.testing.assert_allclose(summary["layers"][name]["equivariance"], r.equivariance[0][li], rtol=1e-5,
                                       atol=1e-7)
    assert summary["probability"]["p_true"] == pytest.approx(r.p_true.mean(0).tolist(), rel=1e-5)
