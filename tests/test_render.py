"""Plots: real axes (seconds, Hz on a mel axis), centred diverging maps, colour bars with units."""
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

from audioconv.app.figures import save_figure
from audioconv.features import LogMel
from audioconv.plots.curves import plot_convergence
from audioconv.plots.figure import input_label
from audioconv.plots.grids import plot_evolution_grid, plot_topk_grid
from audioconv.plots.occlusion import plot_occlusion
from audioconv.plots.projection import plot_projection
from audioconv.plots.spectrogram import hz_edges, seconds_edges

matplotlib.use("Agg")


def _fake_projection(b=2, k=2, seed=0):
    lm = LogMel(n_mels=32)
    n_frames = 51
    rng = np.random.default_rng(seed)
    maps = np.zeros((b, k, 32, n_frames))
    maps[:, :, 10:18, 20:28] = rng.normal(size=(b, k, 8, 8)) + 0.3
    return SimpleNamespace(
        spectrograms=torch.from_numpy(rng.normal(-40, 10, size=(b, 32, n_frames))),
        maps=torch.from_numpy(maps), activations=torch.ones(b, k) * 2.5,
        positions=torch.tensor([[[3, 6]] * k] * b), receptive_fields=torch.tensor([[[10, 18, 20, 28]] * k] * b),
        layer="conv2", channels=torch.arange(k) + 3, mode="deconv",
        hz=lm.mel_hz(), seconds=lm.frame_s(n_frames)), lm


def _tick_values(ax, which):
    ax.figure.canvas.draw()
    axis = ax.yaxis if which == "y" else ax.xaxis
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_edges_are_halfway_on_the_mel_scale():
    lm = LogMel()
    hz = lm.mel_hz()
    edges = hz_edges(hz)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # HTK, independent of the code under test
    np.testing.assert_allclose(mel(edges[1:-1]), (mel(hz[:-1]) + mel(hz[1:])) / 2, rtol=1e-9)
    # the mel centres are evenly spaced in mel from f_min to f_max (one step beyond each end):
    # the outer cell edges lie halfway between f_min / f_max and the outer centres
    assert mel(edges[0]) == pytest.approx((mel(lm.config.f_min_hz) + mel(hz[0])) / 2, rel=1e-9)
    assert mel(edges[-1]) == pytest.approx((mel(lm.config.f_max) + mel(hz[-1])) / 2, rel=1e-9)
    np.testing.assert_allclose(seconds_edges(lm.frame_s(3)), [-0.005, 0.005, 0.015, 0.025])


def test_plot_projection_axes_colourbars_and_centred_map(tmp_path):
    proj, lm = _fake_projection()
    path = tmp_path / "p" / "proj.png"
    fig = plot_projection(proj, (1, 1), logmel=lm)
    save_figure(fig, path)
    assert path.is_file() and path.stat().st_size > 10_000
    main_axes, bars = fig.axes[:3], fig.axes[3:]
    assert "Hz" in main_axes[0].get_ylabel()  # shared y axis: labelled once
    for ax in main_axes:
        assert "Time" in ax.get_xlabel() and "(s)" in ax.get_xlabel()
        assert ax.get_yscale() == "symlog"  # librosa's mel axis
    # y tick labels are frequencies in Hz (numbers within the mel range), x ticks seconds
    ys = [float(t.replace("−", "-")) for t in _tick_values(main_axes[0], "y")]
    assert ys and all(0 <= v <= 8000 for v in ys) and max(ys) >= 1000
    xs = [float(t) for t in _tick_values(main_axes[0], "x")]
    assert xs and max(xs) <= 0.6
    # colour bars carry units
    assert [b.get_ylabel() for b in bars] == ["dB", "projection (a.u.)", "projection (a.u.)"]
    # the projection is drawn with a diverging map centred at zero
    mesh = main_axes[1].collections[0]
    assert mesh.get_cmap().name == "RdBu_r"
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
    assert mesh.norm.vmax == pytest.approx(np.abs(proj.maps[1, 1].numpy()).max())
    # the data drawn is the chosen example and unit (pcolormesh keeps rows = mel bins)
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(32, 51), proj.maps[1, 1].numpy())
    # the mesh spans the mel range in Hz and the clip in seconds
    coords = mesh.get_coordinates()
    np.testing.assert_allclose(coords[:, 0, 1], hz_edges(lm.mel_hz()))
    assert lm.config.f_min_hz < coords[0, 0, 1] < lm.mel_hz()[0] and lm.mel_hz()[-1] < coords[-1, 0, 1] < 8000
    assert coords[0, -1, 0] == pytest.approx(50 * 0.01 + 0.005)
    assert "conv2 unit 4" in fig._suptitle.get_text()


def test_plot_projection_bad_index():
    proj, _ = _fake_projection()
    with pytest.raises(ValueError, match="index 5 out of range"):
        plot_projection(proj, 5)
    with pytest.raises(ValueError, match="unit 3 out of range"):
        plot_projection(proj, (0, 3))


def _fake_topk(k=3, n_units=2, n_hits=None):
    lm = LogMel(n_mels=32)
    rng = np.random.default_rng(1)
    rfs = np.array([[[2 + r, 10 + r, 5 + 7 * r, 13 + 7 * r] for r in range(k)] for _ in range(n_units)])
    return SimpleNamespace(
        layer="conv2", mode="deconv", channels=np.array([0, 5][:n_units]), k=k,
        scores=np.sort(rng.random((n_units, k)))[:, ::-1], receptive_fields=rfs,
        projections=[[rng.normal(size=(8, 8)) * (r + 1) for r in range(k)] for _ in range(n_units)],
        patches=[[rng.normal(-30, 5, size=(8, 8)) for _ in range(k)] for _ in range(n_units)],
        labels=[["yes"] * k for _ in range(n_units)], hz=lm.mel_hz(), seconds=lm.frame_s(51),
        clip_ids=[[f"data/esc/{u}-{r}-dog_barking_far_away_take_{r}.wav@1.5s" for r in range(k)]
                  for u in range(n_units)],
        n_hits=np.array(n_hits if n_hits is not None else [k] * n_units))


def _grid_cells(fig):
    """(crop axes, colour-bar axes) of a grid figure."""
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    return [ax for ax in fig.axes if ax not in bars], bars


def test_plot_topk_grid_is_readable(tmp_path):
    topk = _fake_topk()
    fig = plot_topk_grid(topk)
    save_figure(fig, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()
    cells, bars = _grid_cells(fig)
    assert len(cells) == 2 * 2 * 3  # per unit: a row of projections over a row of patches
    assert [b.get_ylabel() for b in bars] == ["projection (a.u.)", "dB"] * 2  # a colour bar at each row's end
    rows = [cells[i:i + 3] for i in range(0, len(cells), 3)]
    for i, row in enumerate(rows):
        assert row[0].get_ylabel() == ("unit 0\nHz", "input\nHz", "unit 5\nHz", "input\nHz")[i]
        for r, ax in enumerate(row):
            f0, f1 = topk.receptive_fields[i // 2][r][:2]
            ticks = ax.get_yticks()  # Hz ticks inside the crop's band, on every cell
            assert topk.hz[f0] == pytest.approx(ticks[0]) and topk.hz[f1 - 1] == pytest.approx(ticks[-1])
            labels = _tick_values(ax, "y")
            assert (labels == [f"{h:.0f}" if h < 1000 else f"{h / 1000:.1f}k" for h in ticks]) if r == 0 else not labels
            mesh = ax.collections[0]
            if i % 2 == 0:  # projections: the unit's own scale, centred at zero, shared along the row
                lim = max(np.abs(p).max() for p in topk.projections[i // 2])
                assert (mesh.get_cmap().name, mesh.norm.vmin, mesh.norm.vmax) == ("RdBu_r", -lim, lim)
                np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(8, 8), topk.projections[i // 2][r])
                title = ax.get_title()
                assert title.startswith(f"#{r + 1}  {topk.scores[i // 2][r]:.3g}  yes")
                assert title.split("\n")[1] == f"{i // 2}-{r}-dog_bark…take_{r}@1.5s"  # the clip, shortened
                assert not _tick_values(ax, "x")  # times are under the patch below
            else:  # patches: one dB scale for the whole figure, time ticks under each crop
                lo = min(p.min() for row_ in topk.patches for p in row_)
                assert mesh.norm.vmin == pytest.approx(lo)
                np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(8, 8), topk.patches[i // 2][r])
                t0, t1 = topk.receptive_fields[i // 2][r][2:]
                lo_s, hi_s = ax.get_xlim()
                assert lo_s == pytest.approx(topk.seconds[t0] - 0.005) and hi_s == pytest.approx(topk.seconds[t1 - 1] + 0.005)
                shown = [t for t in ax.get_xticklabels() if lo_s <= t.get_position()[0] <= hi_s]
                assert shown and all(t.get_text() == f"{t.get_position()[0]:.2f}" for t in shown)
            # the crop sits where its receptive field is: rows f0..f1 of the full mel axis
            np.testing.assert_allclose(mesh.get_coordinates()[:, 0, 1], hz_edges(topk.hz)[f0:f1 + 1])
    for text in [ax.title for ax in cells] + [t for ax in cells for t in ax.get_yticklabels()]:
        assert text.get_fontsize() >= 6.5 or not text.get_text()


def test_plot_topk_grid_shows_units_without_hits():
    topk = _fake_topk(n_hits=[3, 0])
    topk.projections[1] = [None] * 3
    topk.patches[1] = [None] * 3
    fig = plot_topk_grid(topk)
    cells, bars = _grid_cells(fig)
    empty = cells[6]  # unit 5's first projection cell
    assert [t.get_text() for t in empty.texts] == ["no activation\nabove zero"] and not empty.collections
    assert [b.get_ylabel() for b in bars if b.axison] == ["projection (a.u.)", "dB"]  # only the unit with hits
    assert fig.axes  # drawing does not fail
    fig.canvas.draw()


def test_plot_evolution_grid_and_convergence(tmp_path):
    lm = LogMel(n_mels=32)
    rng = np.random.default_rng(2)
    projections = [[rng.normal(size=(3, 3)) * (c + 1) for c in range(3)] for _ in range(2)]
    projections[1][0] = None  # no hit at epoch 1
    grid = SimpleNamespace(layer="conv1", mode="deconv", epochs=[1, 2, 5], row_units=[0, 3], row_ranks=[0, 0],
                           projections=projections, receptive_fields=[[np.array([4, 7, 10, 13])] * 3] * 2,
                           activations=[[1.0, 2.0, 3.0]] * 2, hz=lm.mel_hz(), seconds=lm.frame_s(51),
                           clip_ids=[["a/clip_one.wav"] * 3, ["b/clip_two.flac"] * 3])
    fig = plot_evolution_grid(grid)
    save_figure(fig, tmp_path / "evo.png")
    assert (tmp_path / "evo.png").is_file()
    cells, bars = _grid_cells(fig)
    assert len(cells) == 6 and [b.get_ylabel() for b in bars] == ["projection (a.u.)"] * 2
    assert cells[2].get_title() == "epoch 5\n3\nclip_one"
    assert cells[4].get_title() == "2\nclip_two"
    assert "unit 3" in cells[4].get_ylabel() and cells[3].texts[0].get_text() == "no activation\nabove zero"
    for r, row in enumerate((cells[:3], cells[3:])):
        assert _tick_values(row[0] if r == 0 else row[1], "y")  # Hz ticks on every row
        lim = max(np.abs(p).max() for p in projections[r] if p is not None)
        for ax in row:
            if ax.collections:  # one scale per row, centred at zero
                assert (ax.collections[0].norm.vmin, ax.collections[0].norm.vmax) == (-lim, lim)
    fig2 = plot_convergence({"conv1": [0.5, 0.9, 1.0], "conv2": [0.2, 0.6, 1.0]}, [1, 2, 5])
    save_figure(fig2, tmp_path / "conv.png")
    assert (tmp_path / "conv.png").is_file()
    ax = fig2.axes[0]
    assert "epoch" in ax.get_xlabel() and "CKA" in ax.get_ylabel()
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.2, 0.6, 1.0])
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1, 2, 5])
    with pytest.raises(ValueError, match="3 epochs"):
        plot_convergence({"conv1": [0.5]}, [1, 2, 5])


def test_plot_occlusion(tmp_path):
    lm = LogMel(n_mels=32)
    spec = np.random.default_rng(3).normal(size=(32, 51))
    prob = np.linspace(0, 1, 7 * 11).reshape(7, 11)
    fig = plot_occlusion(spec, prob, lm.mel_hz(), lm.frame_s(51), (8, 10), (4, 4))
    save_figure(fig, tmp_path / "occ.png")
    assert (tmp_path / "occ.png").is_file()
    assert fig.axes[1].collections[0].norm.vmin == 0 and "Hz" in fig.axes[0].get_ylabel()
    assert fig.axes[1].get_yscale() == "symlog" and "Time" in fig.axes[1].get_xlabel()
    with pytest.raises(ValueError, match="placements"):
        plot_occlusion(spec, prob[:3], lm.mel_hz(), lm.frame_s(51), (8, 10), (4, 4))


def test_a_normalised_input_is_not_labelled_db():
    """A front end that normalises (PCEN, z-scores) hands the model unitless values: the input's
    colour bar names the normalisation instead of calling them dB."""
    proj, lm = _fake_projection()
    pcen_front = type(lm)(lm.config, normalize="pcen")
    fig = plot_projection(proj, (1, 1), logmel=pcen_front)
    assert fig.axes[3].get_ylabel() == "pcen (unitless)"
    assert plot_projection(proj, (1, 1), logmel=lm).axes[3].get_ylabel() == "dB"
    assert input_label(pcen_front) == "pcen (unitless)" and input_label(lm) == input_label(None) == "dB"
    _, bars = _grid_cells(plot_topk_grid(_fake_topk(), logmel=pcen_front))  # the top-k grid's patches too
    assert [b.get_ylabel() for b in bars] == ["projection (a.u.)", "pcen (unitless)"] * 2
