"""The finiteness test every non-finite guard shares (teacher outputs, hypergradients, parameters)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True when no tensor holds a NaN or an infinity."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)
