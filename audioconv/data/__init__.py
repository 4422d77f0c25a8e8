"""Manifest-backed datasets for DataLoaders: decode, resample, crop/pad on CPU workers."""
from audioconv.data.dataset import (
    ClassBalancedSampler,
    ClipError,
    ClipNotFoundError,
    ManifestDataset,
    SkippedClipWarning,
    collate,
    load_labels,
    save_labels,
)

__all__ = ["ManifestDataset", "collate", "ClassBalancedSampler", "save_labels", "load_labels", "ClipError",
           "ClipNotFoundError", "SkippedClipWarning"]
