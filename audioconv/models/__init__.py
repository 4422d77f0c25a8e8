"""Spectrogram classifiers: ``forward(waveform) -> logits``, with a log-mel front end inside.

Built-in families: :class:`SpectrogramCNN` (``"cnn"``) and :class:`BCResNet` (``"bcresnet"``);
:func:`build_model` also takes ``"package.module:factory"`` (see :mod:`audioconv.models.registry`).
"""
from audioconv.models.bcresnet import BCResNet, BCResNetConfig, SubSpectralNorm
from audioconv.models.classifier import LogMelClassifier
from audioconv.models.registry import build_model, count_parameters, describe, rebuild
from audioconv.models.spectrogram_cnn import ModelConfig, SpectrogramCNN

__all__ = ["SpectrogramCNN", "ModelConfig", "BCResNet", "BCResNetConfig", "SubSpectralNorm", "LogMelClassifier",
           "build_model", "describe", "rebuild", "count_parameters"]
