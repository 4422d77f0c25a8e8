"""Plots: real axes (seconds, Hz on a mel axis), centred diverging maps, colour bars with units."""
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch

from audioconv.app.figures import save_figure
from audioconv.features import LogMel
from audioconv.plots.curves import plot_convergence
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


def _fake_topk(k=3, n_units=2):
    lm = LogMel(n_mels=32)
    rng = np.random.default_rng(1)
    rfs = np.array([[[2 + r, 10 + r, 5, 13] for r in range(k)] for _ in range(n_units)])
    return SimpleNamespace(
        layer="conv2", mode="deconv", channels=np.array([0, 5][:n_units]), k=k,
        scores=np.sort(rng.random((n_units, k)))[:, ::-1], receptive_fields=rfs,
        projections=[[rng.normal(size=(8, 8)) for _ in range(k)] for _ in range(n_units)],
        patches=[[rng.normal(-30, 5, size=(8, 8)) for _ in range(k)] for _ in range(n_units)],
        labels=[["yes"] * k for _ in range(n_units)], hz=lm.mel_hz(), seconds=lm.frame_s(51))


def test_plot_topk_grid(tmp_path):
    topk = _fake_topk()
    fig = plot_topk_grid(topk)
    save_figure(fig, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").is_file()
    axes = [ax for ax in fig.axes]
    assert len(axes) == 2 * 3 * 2
    first = axes[0]
    assert "Hz" in first.get_ylabel() and "unit 0" in first.get_ylabel()
    assert "Time" in axes[-1].get_xlabel()
    for j, ax in enumerate(axes[:6]):  # row 0: 3 projections then 3 patches
        mesh = ax.collections[0]
        if j < 3:
            assert mesh.get_cmap().name == "RdBu_r" and mesh.norm.vmin == pytest.approx(-mesh.norm.vmax)
            np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(8, 8), topk.projections[0][j])
        else:
            np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(8, 8), topk.patches[0][j - 3])
        # the crop sits where its receptive field is: rows f0..f1 of the full mel axis
        f0, f1 = topk.receptive_fields[0][j % 3][:2]
        edges = hz_edges(topk.hz)
        ys = mesh.get_coordinates()[:, 0, 1]
        np.testing.assert_allclose(ys, edges[f0:f1 + 1])


def test_plot_evolution_grid_and_convergence(tmp_path):
    lm = LogMel(n_mels=32)
    rng = np.random.default_rng(2)
    grid = SimpleNamespace(layer="conv1", mode="deconv", epochs=[1, 2, 5], row_units=[0, 3], row_ranks=[0, 0],
                           projections=[[rng.normal(size=(3, 3)) for _ in range(3)] for _ in range(2)],
                           receptive_fields=[[np.array([4, 7, 10, 13])] * 3] * 2,
                           activations=[[1.0, 2.0, 3.0]] * 2, hz=lm.mel_hz(), seconds=lm.frame_s(51))
    fig = plot_evolution_grid(grid)
    save_figure(fig, tmp_path / "evo.png")
    assert (tmp_path / "evo.png").is_file()
    assert "epoch 5" in fig.axes[2].get_title()
    assert "unit 3" in fig.axes[3].get_ylabel()
    for ax in fig.axes:
        m = ax.collections[0]
        assert m.norm.vmin == pytest.approx(-m.norm.vmax)
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
