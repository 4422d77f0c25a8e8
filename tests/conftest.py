"""Every test starts from the same global random state, so a test that draws from torch's or
numpy's global generators sees the same numbers on every run and in any order."""
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_global_generators():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
