from __future__ import annotations

import warnings

import torch
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from ..io import DEFAULT_MIN_DISTANCE
from ..neighbors import minimum_image_distances
from ._crystal import crystal_tensors

ON_OVERSIZE = ('raise', 'skip')


@functional_transform('updd')
class UPDD(BaseTransform):
    r"""Add the unit-cell pairwise distance matrix (UPDD) of `"PDDFormer: Pairwise Distance
    Distribution Graph Transformer for Crystal Material Property Prediction"
    <https://arxiv.org/abs/2408.12984>`_ (Shen et al., IJCAI 2025) as a dense weighted graph.

    .. math::
        U_{ij} = \frac{1}{d_{\min}(i, j)}, \qquad
        d_{\min}(i, j) = \min_{\mathbf{s} \in \mathbb{Z}^3}
        \lVert \mathbf{p}_j + \mathbf{s}\mathbf{L} - \mathbf{p}_i \rVert, \qquad i \ne j

    The minimum is taken over all lattice shifts, which is exact for skewed cells (rounding
    fractional coordinates is not). The matrix is stored sparsely over all ordered pairs
    :math:`i \ne j` as ``updd_index`` ``[2, num_atoms * (num_atoms - 1)]`` (row 0 :math:`j`,
    row 1 :math:`i`, so ``U @ X`` is a sum aggregation over it) and ``updd_weight``
    ``[num_pairs]`` float32. ``updd_index`` is offset by the node count when batched.

    .. note::
        The cost is :math:`O(m^2)` in the number of atoms :math:`m` of the given cell, and the
        matrix depends on the choice of cell: a supercell has more rows and smaller entries
        between atoms that are images of each other. It is not a crystal invariant.

    Args:
        max_atoms (int, optional): Largest cell handled. (default: :obj:`256`)
        on_oversize (str, optional): ``'raise'`` raises a ``ValueError`` for larger cells,
            ``'skip'`` warns and stores empty ``updd_index`` / ``updd_weight``.
            (default: ``'raise'``)
    """
    def __init__(self, max_atoms: int = 256, on_oversize: str = 'raise') -> None:
        if not isinstance(max_atoms, int) or isinstance(max_atoms, bool) or max_atoms < 1:
            raise ValueError(f'max_atoms must be a positive integer, got {max_atoms!r}.')
        if on_oversize not in ON_OVERSIZE:
            raise ValueError(f'Invalid on_oversize={on_oversize!r}. Use one of {ON_OVERSIZE}.')
        self.max_atoms = max_atoms
        self.on_oversize = on_oversize

    def forward(self, data: Data) -> Data:
        pos, cell, pbc = crystal_tensors(data, type(self).__name__)
        m = pos.shape[0]
        name = getattr(data, 'material_id', None) or 'structure'

        if m > self.max_atoms:
            message = (f'{name} has {m} atoms, more than UPDD(max_atoms={self.max_atoms}). '
                       'Raise max_atoms (memory grows as num_atoms^2) or pass '
                       "on_oversize='skip'.")
            if self.on_oversize == 'raise':
                raise ValueError(message)
            warnings.warn(message + ' Storing an empty UPDD.', stacklevel=2)
            data.updd_index = torch.empty(2, 0, dtype=torch.long)
            data.updd_weight = torch.empty(0)
            return data

        dist = minimum_image_distances(pos, cell, pbc)
        off_diagonal = ~torch.eye(m, dtype=torch.bool, device=pos.device)
        centre, neighbour = off_diagonal.nonzero(as_tuple=True)
        shortest = dist[centre, neighbour]
        if shortest.numel() > 0 and float(shortest.min()) < DEFAULT_MIN_DISTANCE:
            raise ValueError(
                f'{name}: two atoms are {float(shortest.min()):.2e} Å apart, so 1/d_min is '
                'unbounded. Read the structure with read_structure(..., merge_tol=<Å>).')
        data.updd_index = torch.stack([neighbour, centre])
        data.updd_weight = (1.0 / shortest).float()
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_atoms={self.max_atoms}, '
                f'on_oversize={self.on_oversize!r})')
