"""CUDA agrees with the CPU: augmentation replay, projections, a mixed-precision training run.

Skipped where no CUDA device is present (CI, this project's build machine). Run on a GPU machine
with ``pytest -m cuda``.
"""
import math
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

sys.path.insert(0, str(Path(__file__).parent))


def test_default_chain_on_cuda_replays_the_cpu_draw():
    from audioconv.augment import default_chain, params_to

    aug = default_chain(16000)
    x = torch.randn(16, 1, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    params = aug.sample(16, generator=torch.Generator().manual_seed(1), device="cpu")
    codec = next(key for key in params if key.endswith(".Codec"))  # G.711 quantises: a float difference
    params[codec]["apply"][:] = False  # upstream can move a sample one level; compared on its own below
    y_cpu = aug.apply(x, params)
    y_gpu = aug.apply(x.cuda(), params_to(params, "cuda"))
    assert y_gpu.device.type == "cuda" and y_gpu.dtype == x.dtype
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-3, atol=1e-4 * float(y_cpu.abs().max()))


def test_g711_on_cuda_equals_cpu():
    from audioconv.augment import Codec

    x = torch.randn(8, 2, 16000, generator=torch.Generator().manual_seed(0)) * 0.3
    aug = Codec(16000, formats=["mulaw", "alaw"], p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(aug.apply(x.cuda(), {k: v.cuda() for k, v in params.items()}).cpu(), aug.apply(x, params))


@pytest.mark.parametrize("mode", ["deconv", "guided", "gradient"])
def test_projection_on_cuda_equals_cpu(mode):
    from audioconv.models.spectrogram_cnn import SpectrogramCNN
    from audioconv.interpret import Projector

    torch.manual_seed(0)
    model = SpectrogramCNN(4, channels=(8, 16, 16)).eval()
    logmel = torch.randn(3, 1, 64, 101) * 10
    cpu = Projector(model, mode=mode, device="cpu").project(logmel, "conv2", [0, 3, 5], progress=False)
    gpu = Projector(model, mode=mode, device="cuda").project(logmel, "conv2", [0, 3, 5], progress=False)
    assert torch.equal(cpu.positions, gpu.positions)
    scale = float(cpu.maps.abs().max())
    torch.testing.assert_close(gpu.maps, cpu.maps, rtol=1e-3, atol=1e-5 * scale)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model was not moved


def test_bf16_training_on_cuda_learns_and_loads_on_cpu(tmp_path):
    from _tones import CLIP_S, SAMPLE_RATE, make_corpus

    from audioconv.training.checkpoint import load_model
    from audioconv.training.config import TrainConfig
    from audioconv.training.loop import fit

    corpus = make_corpus(tmp_path / "tones")
    cfg = TrainConfig(train=str(corpus["train"]), val=str(corpus["val"]), out=str(tmp_path / "run"),
                      sample_rate=SAMPLE_RATE, clip_s=CLIP_S, channels=(8, 16), n_mels=32, epochs=8,
                      batch_size=8, lr=3e-3, augment="default", specaugment=False, workers=0, seed=0,
                      device="cuda", amp="bf16")
    summary = fit(cfg, progress=False)
    assert summary["device"].startswith("cuda")
    assert math.isfinite(summary["final"]["train_loss"]) and summary["final"]["val_accuracy"] > 0.8
    model, labels = load_model(summary["best_checkpoint"], device="cpu")
    assert next(model.parameters()).device.type == "cpu" and len(labels) == 3
