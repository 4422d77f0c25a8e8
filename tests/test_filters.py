"""Input-free filter projection against the conv weights and scipy's full 2-D convolution."""
import numpy as np
import pytest
import torch
from scipy.signal import convolve2d
from torch import nn

from audioconv.interpret import project_filters, receptive_field_size
from test_projector import spectrogram_cnn


def _net(*modules):
    torch.manual_seed(0)
    return nn.Sequential(*modules).double().eval()


def test_first_layer_filter_is_its_weights():
    net = _net(nn.Conv2d(1, 5, (3, 4), padding=1), nn.ReLU())
    filt = project_filters(net, "1")
    assert filt.shape == (5, 3, 4)
    np.testing.assert_array_equal(filt.numpy(), net[0].weight.detach()[:, 0].numpy())


def test_spectrogram_cnn_conv1_filter_is_weights_times_batchnorm_scales():
    model = spectrogram_cnn()
    f = model.features

    def scale(bn):
        return (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()

    w = f.conv1.weight.detach()[:, 0]
    np.testing.assert_allclose(project_filters(model, "conv1", batchnorm=False).numpy(), w.numpy(), rtol=1e-12)
    expected = w * scale(f.input_norm)[0] * scale(f.bn1)[:, None, None]
    np.testing.assert_allclose(project_filters(model, "conv1").numpy(), expected.numpy(), rtol=1e-12)


def test_two_stacked_convs_equal_their_full_convolution():
    net = _net(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, (3, 5)), nn.ReLU())
    w1, w2 = net[0].weight.detach().numpy(), net[2].weight.detach().numpy()
    filt = project_filters(net, "3").numpy()
    assert filt.shape == (3, 5, 7) == (3, *receptive_field_size(net, "3"))
    for c in range(3):
        ref = sum(convolve2d(w2[c, m], w1[m, 0], mode="full") for m in range(4))
        np.testing.assert_allclose(filt[c], ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("unpool", ["center", "spread"])
def test_pooling_is_undone_by_unpooling_to_the_window(unpool):
    net = _net(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3), nn.ReLU())
    w1, w2 = net[0].weight.detach().numpy(), net[3].weight.detach().numpy()
    filt = project_filters(net, "4", unpool=unpool).numpy()
    assert filt.shape == (3, 8, 8)
    for c in range(3):
        ref = 0
        for m in range(2):
            if unpool == "center":  # 2×2 window: (k−1)//2 = 0, the top-left cell
                up = np.zeros((6, 6))
                up[::2, ::2] = w2[c, m]
            else:
                up = np.kron(w2[c, m], np.ones((2, 2)) / 4)
            ref = ref + convolve2d(up, w1[m, 0], mode="full")
        np.testing.assert_allclose(filt[c], ref, rtol=1e-10, atol=1e-14)


def test_bad_arguments_raise():
    net = _net(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match="unpool"):
        project_filters(net, "1", unpool="max")
    with pytest.raises(ValueError, match="valid layers: 0, 1"):
        project_filters(net, "conv1")
