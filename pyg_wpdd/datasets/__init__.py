"""Crystal datasets: structure folders with ``id_prop.csv`` and CSV files of CIF strings."""
from ._base import CrystalInMemoryDataset
from .crystal_csv import CrystalCSVDataset
from .crystal_folder import STRUCTURE_EXTENSIONS, CrystalFolderDataset
from .registry import DATASETS, PEROV5_SPLITS, PEROV5_TARGETS, load_dataset
from .split import random_split

__all__ = [
    'CrystalInMemoryDataset',
    'CrystalFolderDataset',
    'CrystalCSVDataset',
    'STRUCTURE_EXTENSIONS',
    'DATASETS',
    'PEROV5_SPLITS',
    'PEROV5_TARGETS',
    'load_dataset',
    'random_split',
]
