from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

from torch_geometric.data import Data

from ..io import DEFAULT_MIN_DISTANCE, read_cif_string
from ._base import CrystalInMemoryDataset, targets_tensor
from ._cache import file_fingerprint, short_hash

CsvSource = Union[str, Path, Sequence[Union[str, Path]], Mapping[str, Union[str, Path]]]


def _as_list(value: Union[str, Sequence[str]]) -> List[str]:
    return [value] if isinstance(value, str) else list(value)


class CrystalCSVDataset(CrystalInMemoryDataset):
    r"""Crystals stored as CIF strings in CSV files, the layout of Perov-5, MP-20 and
    Carbon-24 (CDVAE) and of Materials Project exports.

    Each row contains a CIF in ``cif_column``, an identifier in ``id_column`` and one or more
    numeric target columns. CIFs are read by :func:`pyg_wpdd.read_cif_string`. Each ``Data``
    gets ``y`` ``[1, len(target_columns)]`` float32 (empty cells are NaN) and
    ``material_id`` (str).

    The processed cache is ``<root>/processed/csv_<hash>/data_<hash>.pt``. The hash covers the
    name, size and modification time of the CSV file(s), the column choices, the split, the
    reader options and the reprs of ``pre_transform`` and ``pre_filter``. Caches are written
    atomically.

    Args:
        root (str): Folder for the processed cache.
        csv_files (str, list or dict): One CSV path, a list of paths read one after another,
            or a mapping from split name (``'train'``, ``'val'``, ...) to path.
        cif_column (str, optional): Column with the CIF text. (default: ``'cif'``)
        target_columns (str or list of str, optional): Columns that go into ``y``, in order.
            (default: ``'heat_ref'``)
        id_column (str, optional): Column used as ``material_id``; the row number when it is
            absent. (default: ``'material_id'``)
        split (str, optional): Key of ``csv_files`` to load when it is a mapping.
            (default: :obj:`None`)
        occupancy, min_distance, merge_tol, on_error: as in
            :class:`~pyg_wpdd.datasets.CrystalFolderDataset`.
        transform, pre_transform, pre_filter, log, force_reload: as in
            :class:`torch_geometric.data.InMemoryDataset`.
    """
    progress_label = 'reading CIF strings'

    def __init__(self, root: str, csv_files: CsvSource, cif_column: str = 'cif',
                 target_columns: Union[str, Sequence[str]] = 'heat_ref',
                 id_column: str = 'material_id', split: Optional[str] = None,
                 occupancy: str = 'error', min_distance: float = DEFAULT_MIN_DISTANCE,
                 merge_tol: Optional[float] = None, on_error: str = 'raise',
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, log: bool = True,
                 force_reload: bool = False) -> None:
        paths = self._select_files(csv_files, split)
        self.csv_paths = paths
        self.cif_column = cif_column
        self.target_columns = _as_list(target_columns)
        if not self.target_columns:
            raise ValueError('target_columns is empty; name at least one CSV column for y.')
        self.id_column = id_column
        self.split = split
        self.read_options = dict(occupancy=occupancy, min_distance=min_distance,
                                 merge_tol=merge_tol)
        for path in paths:
            if not path.is_file():
                raise ValueError(f'CSV file not found: {path}.')

        key = short_hash(file_fingerprint(paths), cif_column, self.target_columns, id_column,
                         split, self.read_options, repr(pre_transform), repr(pre_filter))
        super().__init__(root, paths[0].parent, key, f'csv_{split or "all"}', transform,
                         pre_transform, pre_filter, on_error, log, force_reload)

    @staticmethod
    def _select_files(csv_files: CsvSource, split: Optional[str]) -> List[Path]:
        if isinstance(csv_files, Mapping):
            if split not in csv_files:
                raise ValueError(f'Invalid split={split!r}. Choose one of '
                                 f'{sorted(csv_files)}.')
            return [Path(csv_files[split])]
        if isinstance(csv_files, (str, Path)):
            return [Path(csv_files)]
        return [Path(p) for p in csv_files]

    @property
    def raw_file_names(self) -> List[str]:
        return [str(path.resolve()) for path in self.csv_paths]

    def records(self) -> Sequence[Tuple[str, object]]:
        # CIFs of large cells can exceed the csv module's default field limit of 131,072
        # characters.
        csv.field_size_limit(min(sys.maxsize, 2 ** 31 - 1))
        records = []
        for path in self.csv_paths:
            with open(path, newline='') as handle:
                reader = csv.DictReader(handle)
                header = reader.fieldnames or []
                missing = [c for c in [self.cif_column, *self.target_columns] if c not in header]
                if missing:
                    raise ValueError(f'{path} has no column(s) {missing}; its columns are '
                                     f'{header}.')
                for number, row in enumerate(reader):
                    material_id = row.get(self.id_column) or f'{path.stem}-{number}'
                    records.append((material_id, (path, number, row)))
        return records

    def read_record(self, material_id: str, record: object) -> Data:
        path, number, row = record
        targets = []
        for column in self.target_columns:
            text = (row[column] or '').strip()
            try:
                targets.append(float(text) if text else math.nan)
            except ValueError as error:
                raise ValueError(f'{path}, row {number + 1} ({material_id}): column {column} '
                                 f'is not a number: {text!r}.') from error
        data = read_cif_string(row[self.cif_column], material_id, **self.read_options)
        data.y = targets_tensor(targets)
        return data
