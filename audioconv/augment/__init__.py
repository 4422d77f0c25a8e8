"""Batched, per-example random waveform augmentations on any device.

```python
from audioconv.augment import Compose, PolarityInversion, RandomEQ, Reverb, AddNoise
aug = Compose([PolarityInversion(p=0.5), RandomEQ(16000, p=0.8), Reverb(16000, p=0.5), AddNoise(p=0.8)])
y = aug(x, generator=g)                               # x: (B, C, T), (C, T) or (T,)
params = aug.sample(x.shape[0], generator=g, device=x.device)
y = aug.apply(x, params)                              # replays the same draw
```
See ``base`` for the contract shared by every augmentation.
"""
from .chain import chain_from_config, chain_to_config, default_chain, describe_example, load_chain, save_chain
from .base import Augmentation, Compose, OneOf
from .params import Params, params_from_json, params_select, params_to, params_to_json
from .eq import RandomEQ, biquad_coefficients, eq_biquads, eq_response
from .gain import Gain
from .mix import BatchMix
from .noise import AddNoise
from .polarity import PolarityInversion
from .reverb import Reverb, synthetic_rir
from .shift import TimeShift
from .speed import SpeedPerturb

__all__ = [
    "Augmentation", "Compose", "OneOf", "Params",
    "PolarityInversion", "RandomEQ", "Reverb", "AddNoise", "BatchMix", "Gain", "TimeShift", "SpeedPerturb",
    "synthetic_rir", "biquad_coefficients", "eq_biquads", "eq_response",
    "params_to", "params_select", "params_to_json", "params_from_json",
    "chain_from_config", "chain_to_config", "default_chain", "load_chain", "save_chain", "describe_example",
]
