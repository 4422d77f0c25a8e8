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
from .bitcrush import BitCrush
from .clip import Clip
from .codec import Codec
from .distortion import Distortion
from .eq import RandomEQ, biquad_coefficients, eq_biquads, eq_response
from .events import AddEvents
from .filters import BandPass, BandStop, HighPass, LowPass, butterworth_response
from .gain import Gain
from .gain_transition import GainTransition
from .mix import BatchMix
from .noise import AddNoise
from .pitch import PitchShift
from .polarity import PolarityInversion
from .reverb import Reverb, synthetic_rir
from .shift import TimeShift
from .speed import SpeedPerturb
from .stretch import TimeStretch
from .time_mask import TimeMask

__all__ = [
    "Augmentation", "Compose", "OneOf", "Params",
    "PolarityInversion", "RandomEQ", "Reverb", "AddNoise", "BatchMix", "Gain", "TimeShift", "SpeedPerturb",
    "PitchShift", "TimeStretch", "LowPass", "HighPass", "BandPass", "BandStop", "Clip", "Distortion", "BitCrush",
    "Codec", "AddEvents", "GainTransition", "TimeMask", "butterworth_response",
    "synthetic_rir", "biquad_coefficients", "eq_biquads", "eq_response",
    "params_to", "params_select", "params_to_json", "params_from_json",
    "chain_from_config", "chain_to_config", "default_chain", "load_chain", "save_chain", "describe_example",
]
