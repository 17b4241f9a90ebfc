"""Train/test splits, in one place: the probes' row splits and the directions' held-out masks.

``split_indices`` (sparse probing, cognition probes): ``"paper"`` is exactly scikit-learn's
``train_test_split(test_size, random_state=seed)`` as Gurnee et al.'s code calls it (one
unstratified permutation); ``"stratified"`` holds out the same share of each class;
``"grouped"`` holds out whole groups (e.g. all rows of one text or item). Both sides must hold
both classes. ``held_out_mask`` (residual directions): a seeded share of each label's
examples, or whole pairs, so both texts of a counterfactual pair fall on the same side.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from mechlin.errors import ArgumentError, EmptyInputError, ProbeInputError

Split = Literal["paper", "stratified", "grouped"]


def split_indices(
    y: Bool[Tensor, " example"],
    *,
    split: Split = "paper",
    test_fraction: float = 0.3,
    seed: int = 42,
    groups: Int[Tensor, " example"] | None = None,
) -> tuple[Int[Tensor, " n_train"], Int[Tensor, " n_test"]]:
    """Train/test row indices. ``"paper"``: one random permutation (unstratified), exactly
    scikit-learn's ``train_test_split`` with ``random_state=seed``."""
    if not 0 < test_fraction < 1:
        raise ArgumentError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.RandomState(seed)
    n = y.numel()
    if split == "paper":
        # scikit-learn's train_test_split(test_size=test_fraction, random_state=seed), as the
        # paper's code calls it: same permutation, same ceil for the test size
        perm = torch.from_numpy(rng.permutation(n))
        n_test = math.ceil(test_fraction * n)
        test, train = perm[:n_test], perm[n_test:]
    elif split == "stratified":
        tests, trains = [], []
        for cls in (False, True):
            idx = torch.nonzero(y == cls).flatten()
            idx = idx[torch.from_numpy(rng.permutation(idx.numel()))]
            n_test = min(max(1, round(test_fraction * idx.numel())), idx.numel() - 1)
            tests.append(idx[:n_test])
            trains.append(idx[n_test:])
        test, train = torch.cat(tests), torch.cat(trains)
    elif split == "grouped":
        if groups is None or groups.numel() != n:
            raise ProbeInputError("split='grouped' needs groups=, one group id per example")
        uniq = torch.unique(groups)
        order = uniq[torch.from_numpy(rng.permutation(uniq.numel()))]
        held = torch.zeros(n, dtype=torch.bool)
        for g in order:
            if int(held.sum()) >= test_fraction * n:
                break
            held |= groups == g
        test, train = torch.nonzero(held).flatten(), torch.nonzero(~held).flatten()
    else:
        raise ArgumentError(f"split must be one of {get_args(Split)}, not {split!r}")
    for name, idx in (("training", train), ("test", test)):
        n_pos = int(y[idx].sum())
        if n_pos == 0 or n_pos == idx.numel():
            raise ProbeInputError(
                f"the {name} split of {idx.numel()} rows holds one class only "
                f"({n_pos} positives); use split='stratified' or more examples"
            )
    return train.sort().values, test.sort().values


def held_out_mask(labels: Tensor, groups: Tensor | None, test_fraction: float, seed: int) -> Tensor:
    """Held-out mask: ``test_fraction`` of each label's examples, or of the pairs (``groups``)."""
    generator = torch.Generator().manual_seed(seed)

    def pick(n: int, what: str) -> Tensor:
        if n < 2:
            raise EmptyInputError(
                f"{what} has {n} example(s); the train/test split needs at least 2"
            )
        n_test = min(n - 1, max(1, round(test_fraction * n)))
        return torch.randperm(n, generator=generator)[:n_test]

    if groups is not None:  # pairs: hold out whole pairs
        chosen = pick(int(groups.max()) + 1, "the list of pairs")
        return torch.isin(groups, chosen)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    for label in (0, 1):
        idx = (labels == label).nonzero().flatten()
        is_test[idx[pick(len(idx), f"label {label}")]] = True
    return is_test
