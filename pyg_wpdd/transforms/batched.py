from __future__ import annotations

import copy
from typing import Callable, List, Optional, Sequence

from torch_geometric.data import Data
from torch_geometric.transforms import Compose
from tqdm.auto import tqdm

from ..neighbors import periodic_knn_and_distances_batch
from .periodic_knn_graph import PeriodicKNNGraph
from .wpdd import WPDD


def _graph_and_wpdd(graph: PeriodicKNNGraph, wpdd: WPDD, chunk: List[Data]) -> List[Data]:
    """Apply both transforms from one neighbour search, as they would apply one by one."""
    structures = [wpdd.inputs(data) for data in chunk]
    found = periodic_knn_and_distances_batch(structures, k=graph.k, k_dist=wpdd.k,
                                             tie_tol=graph.tie_tol)
    for data, (neighbors, _) in zip(chunk, found):
        graph.attach(data, neighbors)
    wpdd.attach_batch(chunk, [distances for _, distances in found])
    return chunk


def _apply_sequence(transforms: Sequence[Callable], chunk: List[Data]) -> List[Data]:
    position = 0
    while position < len(transforms):
        pair = transforms[position:position + 2]
        kinds = [type(t) for t in pair]
        # PeriodicKNNGraph and WPDD read only pos, cell, pbc and z and write disjoint keys,
        # so an adjacent pair can share one neighbour search in either order.
        if kinds in ([PeriodicKNNGraph, WPDD], [WPDD, PeriodicKNNGraph]):
            graph, wpdd = pair if kinds[0] is PeriodicKNNGraph else pair[::-1]
            chunk = _graph_and_wpdd(graph, wpdd, chunk)
            position += 2
            continue
        chunk = _apply(transforms[position], chunk)
        position += 1
    return chunk


def _apply(transform: Callable, chunk: List[Data]) -> List[Data]:
    if isinstance(transform, Compose):
        return _apply_sequence(transform.transforms, chunk)
    forward_batch = getattr(transform, 'forward_batch', None)
    if forward_batch is not None:
        return forward_batch(chunk)
    return [transform(data) for data in chunk]


def transform_batch(transform: Optional[Callable], data_list: Sequence[Data],
                    chunk_size: int = 256, progress: bool = False,
                    desc: str = 'transforming') -> List[Data]:
    r"""Apply a transform to many crystals, vectorising the crystal transforms.

    :class:`~pyg_wpdd.transforms.PeriodicKNNGraph`, :class:`~pyg_wpdd.transforms.WPDD` and
    :class:`~pyg_wpdd.transforms.PDD`, also inside :class:`~torch_geometric.transforms.Compose`,
    run one neighbour search per chunk of crystals, and a ``PeriodicKNNGraph`` next to a
    ``WPDD`` in a ``Compose`` shares one search. Other transforms are called one crystal at
    a time. The result equals ``[transform(d) for d in data_list]`` (floating-point values
    to within 1e-6).

    The new tensors of one chunk can be views into shared buffers, so ``torch.save`` of a
    single ``Data`` would store the whole buffer. Call ``data.clone()`` first. Collating
    into a dataset or a batch copies them.

    Args:
        transform (callable, optional): The transform; :obj:`None` returns shallow copies.
        data_list (sequence of Data): Crystals; they are shallow-copied, not modified.
        chunk_size (int, optional): Crystals per vectorised call. (default: :obj:`256`)
        progress (bool, optional): Show a tqdm progress bar. (default: :obj:`False`)
        desc (str, optional): Progress bar label. (default: ``'transforming'``)
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f'chunk_size must be a positive integer, got {chunk_size!r}.')
    out: List[Data] = []
    with tqdm(total=len(data_list), desc=desc, disable=not progress, unit='crystal') as bar:
        for start in range(0, len(data_list), chunk_size):
            chunk = [copy.copy(data) for data in data_list[start:start + chunk_size]]
            if transform is not None:
                chunk = _apply(transform, chunk)
            out.extend(chunk)
            bar.update(len(chunk))
    return out
