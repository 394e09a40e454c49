from __future__ import annotations

from typing import List, Sequence

from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from ..io import DEFAULT_MIN_DISTANCE
from ..neighbors import DEFAULT_TIE_TOL, PeriodicNeighbors, periodic_knn_batch
from ._crystal import crystal_tensors


@functional_transform('periodic_knn_graph')
class PeriodicKNNGraph(BaseTransform):
    r"""Connect every atom of a crystal to its ``k`` nearest neighbours under periodic
    boundary conditions, as used by PDDFormer (Shen et al., `"PDDFormer: Pairwise Distance
    Distribution Graph Transformer for Crystal Material Property Prediction"
    <https://arxiv.org/abs/2408.12984>`_, IJCAI 2025) and other crystal graph networks.

    Every periodic image is its own edge (a multigraph with self-image loops):

    .. math::
        \mathcal{E} = \{ (j, \mathbf{s}) \to i : \lVert \mathbf{p}_j + \mathbf{s}\mathbf{L}
        - \mathbf{p}_i \rVert \le d_{i,k} + \epsilon \}

    where :math:`d_{i,k}` is the k-th nearest distance of atom :math:`i`, so all neighbours
    tied with the k-th are kept and an atom may get more than ``k`` edges. The search is exact
    for any cell (see :mod:`pyg_wpdd.neighbors`), unlike :class:`~torch_geometric.transforms.
    RadiusGraph`, which ignores periodicity and caps neighbours at 32.

    Adds ``edge_index`` ``[2, num_edges]`` (row 0 neighbour :math:`j`, row 1 centre
    :math:`i`), ``edge_dist`` ``[num_edges]``, ``edge_vec`` ``[num_edges, 3]``
    (:math:`\mathbf{p}_j + \mathbf{s}\mathbf{L} - \mathbf{p}_i`) and ``edge_shift``
    ``[num_edges, 3]`` long. Edges are sorted by centre, distance, neighbour, then shift.

    The graph is directed, as k-NN graphs are: :math:`j` can be among the nearest
    neighbours of :math:`i` without the converse. The reverse of edge
    :math:`(j, \mathbf{s}) \to i` is :math:`(i, -\mathbf{s}) \to j` with the negated
    ``edge_vec``. PyG's :class:`~torch_geometric.transforms.ToUndirected` (2.8) ignores
    shifts: it copies ``edge_vec`` and ``edge_shift`` to reversed edges without negating
    them, and coalesces the edges between one pair of atoms (all their periodic images)
    into one, summing the attributes. Do not apply it to these graphs.

    Args:
        k (int, optional): Number of neighbours per atom. (default: :obj:`16`)
        tie_tol (float, optional): Neighbours within ``d_k + tie_tol`` Å are kept.
            (default: :obj:`1e-6`)

    Raises:
        ValueError: if two atoms are closer than 1e-3 Å (read the structure with
            ``merge_tol`` to merge duplicates), or the input is not one crystal.
    """
    def __init__(self, k: int = 16, tie_tol: float = DEFAULT_TIE_TOL) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f'k must be a positive integer, got {k!r}.')
        if not 0 <= tie_tol < float('inf'):
            raise ValueError(f'tie_tol must be a finite non-negative distance in Å, got '
                             f'{tie_tol!r}.')
        self.k = k
        self.tie_tol = tie_tol

    def forward(self, data: Data) -> Data:
        return self.forward_batch([data])[0]

    def forward_batch(self, data_list: Sequence[Data]) -> List[Data]:
        """Apply the transform to many crystals with one vectorised neighbour search.

        Unlike ``__call__``, this writes into the given ``Data`` objects.
        """
        name = type(self).__name__
        structures = [crystal_tensors(data, name) for data in data_list]
        found = periodic_knn_batch(structures, k=self.k, tie_tol=self.tie_tol)
        for data, neighbors in zip(data_list, found):
            self.attach(data, neighbors)
        return list(data_list)

    @staticmethod
    def attach(data: Data, neighbors: PeriodicNeighbors) -> None:
        """Store a neighbour search result on ``data`` after checking for overlaps."""
        _check_min_distance(neighbors, data)
        data.edge_index = neighbors.edge_index
        data.edge_dist = neighbors.edge_dist
        data.edge_vec = neighbors.edge_vec
        data.edge_shift = neighbors.edge_shift

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k}, tie_tol={self.tie_tol})'


def _check_min_distance(neighbors: PeriodicNeighbors, data: Data) -> None:
    if neighbors.edge_dist.numel() == 0:
        return
    shortest = int(neighbors.edge_dist.argmin())
    if float(neighbors.edge_dist[shortest]) < DEFAULT_MIN_DISTANCE:
        j, i = neighbors.edge_index[:, shortest].tolist()
        name = getattr(data, 'material_id', None) or 'structure'
        raise ValueError(
            f'{name}: atoms {i} and {j} are {float(neighbors.edge_dist[shortest]):.2e} Å apart, '
            f'closer than {DEFAULT_MIN_DISTANCE} Å. Read the structure with '
            'read_structure(..., merge_tol=<Å>) to merge duplicates.')
