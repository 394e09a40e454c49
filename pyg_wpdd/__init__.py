"""Pairwise-distance-distribution crystal graphs for PyTorch Geometric.

Crystal input (:mod:`pyg_wpdd.io`), exact periodic k-NN search (:mod:`pyg_wpdd.neighbors`),
the ``PeriodicKNNGraph``, ``WPDD``, ``UPDD`` and ``PDD`` transforms
(:mod:`pyg_wpdd.transforms`) and crystal datasets (:mod:`pyg_wpdd.datasets`).
"""
from . import datasets, io, neighbors, transforms
from .datasets import (CrystalCSVDataset, CrystalFolderDataset, load_dataset,
                       random_split)
from .io import (StructureFileNotFoundError, atoms_to_data, read_cif_string, read_structure,
                 structure_to_data)
from .neighbors import (PeriodicNeighbors, minimum_image_distances, periodic_knn,
                        periodic_knn_and_distances_batch, periodic_knn_batch,
                        periodic_knn_distances, periodic_knn_distances_batch)
from .transforms import (PDD, UPDD, WPDD, PeriodicKNNGraph, pdd, pdd_distance,
                         transform_batch)

__all__ = [
    'CrystalCSVDataset',
    'CrystalFolderDataset',
    'PDD',
    'PeriodicKNNGraph',
    'PeriodicNeighbors',
    'StructureFileNotFoundError',
    'UPDD',
    'WPDD',
    'atoms_to_data',
    'datasets',
    'io',
    'load_dataset',
    'minimum_image_distances',
    'neighbors',
    'pdd',
    'pdd_distance',
    'periodic_knn',
    'periodic_knn_and_distances_batch',
    'periodic_knn_batch',
    'periodic_knn_distances',
    'periodic_knn_distances_batch',
    'random_split',
    'read_cif_string',
    'read_structure',
    'structure_to_data',
    'transform_batch',
    'transforms',
]

# Models (pyg_wpdd.nn).
from . import nn  # noqa: E402
from .nn import CGCNN, WPDDFormer  # noqa: E402

__all__ += ['CGCNN', 'WPDDFormer', 'nn']
