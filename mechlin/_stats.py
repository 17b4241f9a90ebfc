"""Mean and standard error over the first dimension (facts, samples): the one place it is done.

The standard error is the sample standard deviation (Bessel-corrected, as ``torch.std``) over
sqrt(n); with a single sample it is 0, not NaN, so a one-fact run still plots.
"""

from __future__ import annotations

import math

from jaxtyping import Float
from torch import Tensor


def mean_and_se(
    stack: Float[Tensor, "n ..."],
) -> tuple[Tensor, Tensor]:
    """(mean, standard error) over dim 0 of ``stack``.

    >>> import torch
    >>> mean, se = mean_and_se(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    >>> mean.tolist(), [round(x, 4) for x in se.tolist()]
    ([2.0, 4.0], [1.0, 2.0])
    """
    n = stack.shape[0]
    mean = stack.mean(0)
    se = stack.std(0) / math.sqrt(n) if n > 1 else mean.new_zeros(mean.shape)
    return mean, se
