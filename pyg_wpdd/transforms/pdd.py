from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from ..neighbors import periodic_knn_distances_batch
from ._crystal import crystal_tensors


def collapse_rows(distances: Tensor, collapse_tol: float = 1e-4) -> Tensor:
    r"""Merge equal rows of per-atom distances into a weighted, sorted PDD.

    Rows are sorted lexicographically. Each row joins the first earlier kept row within
    Chebyshev distance ``collapse_tol`` (:math:`\max_k |d_{ik} - d_{jk}|`) and adds its
    weight :math:`1/m` to it. The kept row is the lexicographically smallest of its group.

    Args:
        distances (torch.Tensor): ``[num_atoms, k]`` sorted neighbour distances.
        collapse_tol (float, optional): Chebyshev tolerance in Å. (default: :obj:`1e-4`)

    Returns:
        torch.Tensor: ``[num_rows, k + 1]``, weights in column 0, summing to 1.
    """
    if not collapse_tol >= 0:
        raise ValueError(f'collapse_tol must be a non-negative distance in Å, '
                         f'got {collapse_tol!r}.')
    rows = distances.double().cpu().numpy()
    m = rows.shape[0]
    # np.lexsort sorts by its last key first, so pass the columns in reverse.
    rows = rows[np.lexsort(rows.T[::-1])]
    chebyshev = np.abs(rows[:, None, :] - rows[None, :, :]).max(axis=-1)

    owner = np.arange(m)
    for i in range(m):
        earlier = np.flatnonzero((chebyshev[i, :i] <= collapse_tol) & (owner[:i] == np.arange(i)))
        if earlier.size:
            owner[i] = earlier[0]
    kept, counts = np.unique(owner, return_counts=True)
    weights = counts / m
    table = np.concatenate([weights[:, None], rows[kept]], axis=1)
    return torch.from_numpy(table).to(device=distances.device, dtype=distances.dtype)


def pdd(data: Data, k: int = 100, collapse_tol: float = 1e-4) -> Tensor:
    r"""Compute the pairwise distance distribution of one crystal, ``[num_rows, k + 1]``.

    See :class:`PDD`. Atom types are ignored.
    """
    return PDD(k=k, collapse_tol=collapse_tol).compute(data)


def pdd_distance(pdd_a: Tensor, pdd_b: Tensor) -> float:
    r"""Compute the earth mover's distance between two PDDs with the Chebyshev metric.

    .. math::
        \mathrm{EMD}(P, Q) = \min_{f \ge 0} \sum_{i,j} f_{ij}
        \lVert P_i - Q_j \rVert_\infty, \quad \sum_j f_{ij} = w^P_i, \
        \sum_i f_{ij} = w^Q_j

    Solved as a linear program with :func:`scipy.optimize.linprog` (HiGHS). The cost grows
    with the product of the row counts, so this is meant for PDDs of up to a few hundred rows.

    Args:
        pdd_a (torch.Tensor): ``[rows_a, k + 1]``, weights in column 0.
        pdd_b (torch.Tensor): ``[rows_b, k + 1]`` with the same ``k``.
    """
    from scipy.optimize import linprog  # noqa: PLC0415

    if pdd_a.shape[1] != pdd_b.shape[1]:
        raise ValueError(f'Both PDDs need the same k, got {pdd_a.shape[1] - 1} and '
                         f'{pdd_b.shape[1] - 1} columns of distances.')
    a = pdd_a.double().cpu().numpy()
    b = pdd_b.double().cpu().numpy()
    cost = np.abs(a[:, None, 1:] - b[None, :, 1:]).max(axis=-1)
    n_a, n_b = cost.shape

    # Row sums of the flow match the weights of P, column sums those of Q.
    rows = np.kron(np.eye(n_a), np.ones((1, n_b)))
    cols = np.kron(np.ones((1, n_a)), np.eye(n_b))
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                     b_eq=np.concatenate([a[:, 0], b[:, 0]]), bounds=(0, None), method='highs')
    if not result.success:
        raise ValueError(f'The EMD linear program failed: {result.message}. Check that the '
                         'weights in column 0 of each PDD sum to 1.')
    return float(result.fun)


@functional_transform('pdd')
class PDD(BaseTransform):
    r"""Add the pairwise distance distribution (PDD) of `"Resolving the data ambiguity for
    periodic crystals" <https://arxiv.org/abs/2108.04798>`_ (Widdowson and Kurlin,
    NeurIPS 2022), a crystal-level descriptor for similarity search.

    Row :math:`i` of the uncollapsed matrix contains the sorted distances from atom :math:`i` to
    its ``k`` nearest atoms in the infinite crystal. Rows are sorted lexicographically and rows
    within Chebyshev distance ``collapse_tol`` are merged, adding their weights:

    .. math::
        \mathrm{PDD} = \big[\, w_r, d_{r,1}, \dots, d_{r,k} \,\big]_r, \qquad
        w_r = \frac{|\{ i : \max_l |d_{il} - d_{rl}| \le \epsilon \}|}{m}

    The collapsed PDD does not depend on the unit cell, supercell, atom order or rigid
    motions, and moves continuously with the atoms. It ignores atom types.

    Stored as ``data.pdd`` ``[num_rows, k + 1]`` float32. When such ``Data`` objects are
    batched, the rows of all crystals are concatenated; compare crystals one by one with
    :func:`pdd_distance`.

    Args:
        k (int, optional): Number of neighbour distances per row. (default: :obj:`100`)
        collapse_tol (float, optional): Chebyshev tolerance in Å for merging rows.
            (default: :obj:`1e-4`)
    """
    def __init__(self, k: int = 100, collapse_tol: float = 1e-4) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f'k must be a positive integer, got {k!r}.')
        if not collapse_tol >= 0:
            raise ValueError(f'collapse_tol must be a non-negative distance in Å, '
                             f'got {collapse_tol!r}.')
        self.k = k
        self.collapse_tol = collapse_tol

    def compute(self, data: Data) -> Tensor:
        """Return the collapsed PDD of one crystal without changing ``data``."""
        structure = crystal_tensors(data, type(self).__name__)
        distances = periodic_knn_distances_batch([structure], k=self.k)[0]
        return collapse_rows(distances, self.collapse_tol)

    def forward(self, data: Data) -> Data:
        return self.forward_batch([data])[0]

    def forward_batch(self, data_list: Sequence[Data]) -> List[Data]:
        """Apply the transform to many crystals with one vectorised neighbour search.

        Unlike ``__call__``, this writes into the given ``Data`` objects.
        """
        name = type(self).__name__
        structures = [crystal_tensors(data, name) for data in data_list]
        for data, distances in zip(data_list, periodic_knn_distances_batch(structures, self.k)):
            data.pdd = collapse_rows(distances, self.collapse_tol)
        return list(data_list)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k}, collapse_tol={self.collapse_tol})'
