from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from ..neighbors import periodic_knn_distances_batch
from ._crystal import crystal_tensors

WEIGHTINGS = ('mean_normalised', 'paper', 'mass', 'uniform')


def atom_weights(z: Tensor, weighting: str = 'mean_normalised') -> Tensor:
    r"""Compute the per-atom WPDD weights :math:`w_i`, ``[num_atoms]`` float32.

    Args:
        z (torch.Tensor): Atomic numbers, ``[num_atoms]``.
        weighting (str, optional): One of ``'mean_normalised'``
            (:math:`Z_i / \overline{Z}`), ``'paper'`` (:math:`Z_i / \sum_j Z_j`), ``'mass'``
            (:math:`M_i / \overline{M}`) or ``'uniform'`` (1). (default: ``'mean_normalised'``)
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f'Invalid weighting={weighting!r}. Use one of {WEIGHTINGS}.')
    z = z.reshape(-1).double()
    if weighting == 'uniform':
        return torch.ones_like(z, dtype=torch.float32)
    if weighting == 'paper':
        return (z / z.sum()).float()
    if weighting == 'mass':
        from ase.data import atomic_masses  # noqa: PLC0415

        masses = torch.as_tensor(atomic_masses, dtype=torch.float64, device=z.device)[z.long()]
        return (masses / masses.mean()).float()
    return (z / z.mean()).float()


@functional_transform('wpdd')
class WPDD(BaseTransform):
    r"""Add the weighted pairwise distance distribution (WPDD) of every atom, from
    `"PDDFormer: Pairwise Distance Distribution Graph Transformer for Crystal Material
    Property Prediction" <https://arxiv.org/abs/2408.12984>`_ (Shen et al., IJCAI 2025), built
    on the PDD of `"Resolving the data ambiguity for periodic crystals"
    <https://arxiv.org/abs/2108.04798>`_ (Widdowson and Kurlin, NeurIPS 2022).

    Row :math:`i` contains the atom's weight and its sorted distances to the ``k`` nearest atoms
    of the infinite crystal (periodic images of atom :math:`i` itself included):

    .. math::
        \mathrm{WPDD}_i = [\, w_i, d_{i,1}, \dots, d_{i,k} \,], \qquad
        d_{i,1} \le \dots \le d_{i,k}

    with the weights

    .. math::
        w_i^{\text{mean\_normalised}} = \frac{Z_i}{\frac{1}{m}\sum_j Z_j}, \quad
        w_i^{\text{paper}} = \frac{Z_i}{\sum_j Z_j}, \quad
        w_i^{\text{mass}} = \frac{M_i}{\frac{1}{m}\sum_j M_j}, \quad
        w_i^{\text{uniform}} = 1.

    Stored as ``data.wpdd`` ``[num_atoms, k + 1]`` float32, distances in Å, one row per atom
    (rows are not collapsed, so they stay aligned with the nodes). The transform runs its own
    exact periodic neighbour search (:mod:`pyg_wpdd.neighbors`), so it needs only ``pos``,
    ``cell`` and ``z``, not a :class:`PeriodicKNNGraph` first.

    .. warning::
        ``weighting='paper'`` is the form used by the PDDFormer authors' code. It divides by
        the number of atoms in the given cell, so the same crystal written as a 2x1x1
        supercell gets half the weights: it is **not** invariant to the choice of cell. The
        other weightings are invariant to the cell, supercells, atom order and rigid motions.

    Args:
        k (int, optional): Number of neighbour distances per row. (default: :obj:`50`)
        weighting (str, optional): ``'mean_normalised'``, ``'paper'``, ``'mass'`` or
            ``'uniform'``. (default: ``'mean_normalised'``)
    """
    def __init__(self, k: int = 50, weighting: str = 'mean_normalised') -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f'k must be a positive integer, got {k!r}.')
        if weighting not in WEIGHTINGS:
            raise ValueError(f'Invalid weighting={weighting!r}. Use one of {WEIGHTINGS}.')
        self.k = k
        self.weighting = weighting

    def forward(self, data: Data) -> Data:
        return self.forward_batch([data])[0]

    def forward_batch(self, data_list: Sequence[Data]) -> List[Data]:
        """Apply the transform to many crystals with one vectorised neighbour search.

        Unlike ``__call__``, this writes into the given ``Data`` objects.
        """
        structures = [self.inputs(data) for data in data_list]
        distances = periodic_knn_distances_batch(structures, k=self.k)
        self.attach_batch(data_list, distances)
        return list(data_list)

    def inputs(self, data: Data) -> Tuple[Tensor, Tensor, Tensor]:
        """Return ``(pos, cell, pbc)`` of ``data``, checking that ``z`` is present too."""
        name = type(self).__name__
        if getattr(data, 'z', None) is None:
            raise ValueError(f'{name} needs atomic numbers in data.z [num_atoms].')
        return crystal_tensors(data, name)

    def attach_batch(self, data_list: Sequence[Data], distances: Sequence[Tensor]) -> None:
        """Store ``data.wpdd`` on many crystals, computing the weights in one pass."""
        if not data_list:
            return
        counts = [int(data.z.numel()) for data in data_list]
        z = torch.cat([data.z.reshape(-1) for data in data_list]).double()
        batch = torch.repeat_interleave(torch.arange(len(counts), device=z.device),
                                        torch.tensor(counts, device=z.device))

        if self.weighting == 'mass':
            from ase.data import atomic_masses  # noqa: PLC0415

            z = torch.as_tensor(atomic_masses, dtype=torch.float64, device=z.device)[z.long()]
        totals = torch.zeros(len(counts), dtype=torch.float64, device=z.device)
        totals.index_add_(0, batch, z)
        if self.weighting == 'paper':
            weights = z / totals[batch]
        elif self.weighting == 'uniform':
            weights = torch.ones_like(z)
        else:
            weights = z / (totals / torch.tensor(counts, dtype=z.dtype, device=z.device))[batch]

        rows = torch.cat([weights.float().unsqueeze(1), torch.cat(list(distances))], dim=1)
        for data, table in zip(data_list, torch.split(rows, counts)):
            data.wpdd = table

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k}, weighting={self.weighting!r})'
