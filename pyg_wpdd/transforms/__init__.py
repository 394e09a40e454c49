r"""Crystal transforms: periodic k-NN graphs and the WPDD, UPDD and PDD descriptors.

Data contract (one :class:`~torch_geometric.data.Data` per crystal), as produced by
:func:`pyg_wpdd.read_structure` and these transforms:

- input: ``pos`` ``[num_atoms, 3]`` float32 (Å), ``cell`` ``[1, 3, 3]`` float32 (rows are
  lattice vectors), ``z`` ``[num_atoms]`` long, ``pbc`` ``[1, 3]`` bool, ``num_nodes``;
  targets ``y`` ``[1, num_targets]`` float32 and ``material_id`` (str) from the datasets.
- :class:`PeriodicKNNGraph`: ``edge_index`` ``[2, num_edges]`` (row 0 neighbour j, row 1
  centre i), ``edge_dist`` ``[num_edges]``, ``edge_vec`` ``[num_edges, 3]``
  (pos_j + shift @ cell - pos_i), ``edge_shift`` ``[num_edges, 3]`` long; sorted by centre,
  distance, neighbour, shift.
- :class:`WPDD`: ``wpdd`` ``[num_atoms, k + 1]``, column 0 the weight, then sorted distances.
- :class:`UPDD`: ``updd_index`` ``[2, num_pairs]`` long (batched like ``edge_index``),
  ``updd_weight`` ``[num_pairs]`` = 1 / d_min(i, j) over pairs i != j.
- :class:`PDD`: ``pdd`` ``[num_rows, k + 1]`` collapsed, crystal-level.
"""
from .batched import transform_batch
from .pdd import PDD, collapse_rows, pdd, pdd_distance
from .periodic_knn_graph import PeriodicKNNGraph
from .updd import UPDD
from .wpdd import WPDD, WEIGHTINGS, atom_weights

__all__ = [
    'PeriodicKNNGraph',
    'WPDD',
    'UPDD',
    'PDD',
    'WEIGHTINGS',
    'atom_weights',
    'collapse_rows',
    'pdd',
    'pdd_distance',
    'transform_batch',
]
