from __future__ import annotations

import math
from typing import List, Sequence

import torch
from torch_geometric.data import Dataset


def random_split(dataset: Dataset, fractions: Sequence[float], seed: int = 0) -> List[Dataset]:
    r"""Split a dataset into disjoint random subsets of the given fractions, reproducibly.

    The permutation comes from a :class:`torch.Generator` seeded with ``seed``, so the same
    dataset, fractions and seed give the same split with the same PyTorch version, and
    the global random state is not touched. Sizes are rounded down and the leftover items
    go to the first subsets, one each.

    Args:
        dataset (torch_geometric.data.Dataset): Dataset to split.
        fractions (sequence of float): Positive fractions summing to 1, e.g. ``[0.8, 0.1, 0.1]``.
        seed (int, optional): Seed of the permutation. (default: :obj:`0`)

    Returns:
        list of Dataset: subsets from :meth:`~torch_geometric.data.Dataset.index_select`.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or any(not f > 0 for f in fractions) or not math.isclose(
            sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f'fractions must be positive and sum to 1, got {fractions}.')
    n = len(dataset)
    sizes = [math.floor(f * n) for f in fractions]
    for i in range(n - sum(sizes)):
        sizes[i % len(sizes)] += 1
    if any(size == 0 for size in sizes):
        raise ValueError(f'Splitting {n} items by {fractions} leaves a subset empty; use '
                         'fewer subsets or a larger dataset.')

    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=generator)
    subsets, start = [], 0
    for size in sizes:
        subsets.append(dataset.index_select(order[start:start + size]))
        start += size
    return subsets
