from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from torch_geometric.data import Data

from ..io import DEFAULT_MIN_DISTANCE, read_structure
from ._base import CrystalInMemoryDataset, targets_tensor
from ._cache import file_fingerprint, short_hash

#: Extensions tried, in order, for ids in ``id_prop.csv`` that name no existing file.
STRUCTURE_EXTENSIONS = ('.cif', '.vasp', '.poscar', '.xyz', '.extxyz')


def _parse_float(text: str) -> float:
    text = text.strip()
    return math.nan if text.lower() in ('', 'nan', 'none', 'na') else float(text)


class CrystalFolderDataset(CrystalInMemoryDataset):
    r"""A folder of structure files with an ``id_prop.csv`` of targets, the layout read by
    CGCNN, ALIGNN and Matformer.

    ``id_prop.csv`` has one row per crystal and no header: ``id,target[,target2,...]``. The
    id is a file name in the folder, with or without its extension (tried in the order of
    :data:`STRUCTURE_EXTENSIONS`). A first row whose targets are not numbers is taken as a
    header and skipped. Files are read by :func:`pyg_wpdd.read_structure` (CIF, POSCAR,
    extended XYZ). Each ``Data`` gets ``y`` ``[1, num_targets]`` float32 and ``material_id``
    (the id without extension); missing target values are NaN.

    The processed cache is ``<root>/processed/folder_<hash>/data_<hash>.pt``. The hash covers
    the name, size and modification time of ``id_prop.csv`` and of every listed file, the
    target columns, the reader options and the reprs of ``pre_transform`` and ``pre_filter``,
    so changing any of them rebuilds the cache. Caches are written atomically.

    Args:
        root (str): Folder for the processed cache (and, by default, the source files).
        source_dir (str, optional): Folder with the structure files and ``id_prop.csv``.
            (default: ``root``)
        id_prop (str, optional): Name of the targets file in ``source_dir``.
            (default: ``'id_prop.csv'``)
        target_columns (sequence of int, optional): Which target columns (0 = first after
            the id) go into ``y``. (default: all)
        occupancy (str, optional): Passed to :func:`~pyg_wpdd.read_structure`.
            (default: ``'error'``)
        min_distance (float, optional): Passed to :func:`~pyg_wpdd.read_structure`.
            (default: :obj:`1e-3`)
        merge_tol (float, optional): Passed to :func:`~pyg_wpdd.read_structure`.
            (default: :obj:`None`)
        on_error (str, optional): ``'raise'`` stops at the first unreadable file,
            ``'skip'`` leaves it out with a warning. (default: ``'raise'``)
        transform, pre_transform, pre_filter, log, force_reload: as in
            :class:`torch_geometric.data.InMemoryDataset`. A ``pre_transform`` built from
            this package's transforms runs vectorised over chunks of crystals.
    """
    progress_label = 'reading structure files'

    def __init__(self, root: str, source_dir: Optional[str] = None,
                 id_prop: str = 'id_prop.csv',
                 target_columns: Optional[Sequence[int]] = None, occupancy: str = 'error',
                 min_distance: float = DEFAULT_MIN_DISTANCE, merge_tol: Optional[float] = None,
                 on_error: str = 'raise', transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, log: bool = True,
                 force_reload: bool = False) -> None:
        source = Path(source_dir if source_dir is not None else root)
        self.id_prop = id_prop
        self.target_columns = None if target_columns is None else [int(c) for c in target_columns]
        self.read_options = dict(occupancy=occupancy, min_distance=min_distance,
                                 merge_tol=merge_tol)
        id_prop_path = source / id_prop
        if not id_prop_path.is_file():
            raise ValueError(f'Targets file not found: {id_prop_path}. A structure folder '
                             'needs an id_prop.csv with "id,target" rows.')
        self._rows = self._read_id_prop(id_prop_path, source)

        key = short_hash(
            file_fingerprint([id_prop_path] + [path for _, path, _ in self._rows]),
            self.target_columns, self.read_options, repr(pre_transform), repr(pre_filter))
        super().__init__(root, source, key, 'folder', transform, pre_transform, pre_filter,
                         on_error, log, force_reload)

    @property
    def raw_file_names(self) -> List[str]:
        return [self.id_prop]

    def _read_id_prop(self, path: Path, source: Path) -> List[Tuple[str, Path, List[float]]]:
        with open(path, newline='') as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
        if not rows:
            raise ValueError(f'{path} is empty. Write one "id,target" row per crystal.')

        try:
            [_parse_float(c) for c in rows[0][1:]]
        except ValueError:
            rows = rows[1:]

        records = []
        for line, row in enumerate(rows, start=1):
            if len(row) < 2:
                raise ValueError(f'{path}, row {line}: expected "id,target", got {row}.')
            try:
                targets = [_parse_float(c) for c in row[1:]]
            except ValueError as error:
                raise ValueError(f'{path}, row {line}: target is not a number: {row[1:]}.'
                                 ) from error
            if self.target_columns is not None:
                if max(self.target_columns, default=-1) >= len(targets):
                    raise ValueError(
                        f'{path}, row {line} has {len(targets)} target column(s), but '
                        f'target_columns={self.target_columns} was requested.')
                targets = [targets[c] for c in self.target_columns]
            records.append((row[0].strip(), self._find_file(source, row[0].strip()), targets))
        return records

    @staticmethod
    def _find_file(source: Path, identifier: str) -> Path:
        candidates = [source / identifier] + [source / (identifier + ext)
                                              for ext in STRUCTURE_EXTENSIONS]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise ValueError(f'No structure file for id {identifier!r} in {source}: tried '
                         f'{[c.name for c in candidates]}.')

    def records(self) -> Sequence[Tuple[str, object]]:
        return [(path.stem, (path, targets)) for _, path, targets in self._rows]

    def read_record(self, material_id: str, record: object) -> Data:
        path, targets = record
        data = read_structure(path, material_id=material_id, **self.read_options)
        data.y = targets_tensor(targets)
        return data
