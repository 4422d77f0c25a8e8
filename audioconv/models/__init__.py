"""Spectrogram classifiers: ``forward(waveform) -> logits``, with a log-mel front end inside."""
from audioconv.models.spectrogram_cnn import ModelConfig, SpectrogramCNN

__all__ = ["SpectrogramCNN", "ModelConfig"]
