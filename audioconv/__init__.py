"""audioconv: augment, train and project audio spectrogram CNNs."""
__version__ = "0.1.0"
