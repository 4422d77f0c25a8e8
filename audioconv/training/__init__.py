"""Training of spectrogram classifiers: settings, the loop, evaluation, checkpoints, torchrun."""
