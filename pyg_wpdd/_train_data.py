"""Crystals and seeded splits for :mod:`pyg_wpdd.train`."""
import csv
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data

from tqdm.auto import tqdm

from .io import read_cif_string, read_structure
from .transforms import transform_batch

# The project's data folder, found from this file so that the working directory does not
# matter; a config's data.root overrides it.
DATA_DIR = Path(__file__).resolve().parents[1] / 'data'
PEROV5_DIR = DATA_DIR / 'crystals' / 'perov_5'
PROJECT_DIR = DATA_DIR.parent
STRUCTURE_SUFFIXES = ('', '.cif', '.vasp', '.poscar', '.xyz', '.extxyz')


def resolve_path(path: Any) -> Path:
    """Resolves a relative path against the working directory if it exists there, else
    against the project folder, so configs that name ``data/...`` work from anywhere."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return PROJECT_DIR / path


def split_indices(num_items: int, fractions: Sequence[float], seed: int) -> Dict[str, Tensor]:
    """Splits ``range(num_items)`` by a permutation seeded with ``seed`` into ``train``,
    ``val`` and ``test`` index tensors of sizes ``floor(f * n)`` for train and validation,
    the rest for test."""
    if num_items < 1:
        raise ValueError('cannot split an empty dataset: check data.root and data.target')
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    num_train = max(1, math.floor(fractions[0] * num_items))
    num_val = min(math.floor(fractions[1] * num_items), num_items - num_train)
    return {
        'train': perm[:num_train],
        'val': perm[num_train:num_train + num_val],
        'test': perm[num_train + num_val:],
    }


def subset_rows(rows: List[Any], max_items: Optional[int], seed: int) -> List[Any]:
    """Returns a seeded random subset of ``max_items`` rows, in their original order."""
    if max_items is None or max_items >= len(rows):
        return rows
    perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    keep = sorted(perm[:max_items].tolist())
    return [rows[i] for i in keep]


def _parse_target(raw: str, target: str, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: target '{target}' is not a number ({raw!r})") from error
    return value


def _read_csv_rows(path: Path, target: str, cif_column: str) -> List[Dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: '{path}'")
    # Perov-5 stores whole CIF files in one field, larger than csv's default field limit on
    # some platforms.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in (cif_column, target):
            if needed not in columns:
                raise ValueError(f"column '{needed}' not found in '{path}': available columns "
                                 f"are {columns}")
        return list(reader)


def _load_csv_crystals(paths: Sequence[Path], data_cfg: Dict[str, Any],
                       seed: int, progress: bool) -> List[Data]:
    target, cif_column = data_cfg['target'], data_cfg['cif_column']
    id_column = data_cfg['id_column']
    rows = []
    for path in paths:
        for index, row in enumerate(_read_csv_rows(path, target, cif_column)):
            rows.append((path, index, row))
    rows = subset_rows(rows, data_cfg['max_crystals'], seed)

    crystals = []
    for path, index, row in tqdm(rows, desc='reading CIFs', unit='crystal',
                                 disable=not progress):
        material_id = row.get(id_column) or f'{path.stem}:{index}'
        data = read_cif_string(row[cif_column], material_id)
        value = _parse_target(row[target], target, f'{path.name} row {index}')
        data.y = torch.tensor([[value]], dtype=torch.float)
        crystals.append(data)
    return crystals


def _find_structure(root: Path, name: str) -> Path:
    for suffix in STRUCTURE_SUFFIXES:
        candidate = root / f'{name}{suffix}'
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"structure '{name}' listed in {root / 'id_prop.csv'} not found "
                            f"in '{root}' (tried suffixes {list(STRUCTURE_SUFFIXES)})")


def _load_folder_crystals(root: Path, data_cfg: Dict[str, Any], seed: int,
                          progress: bool) -> List[Data]:
    """Reads ``root/id_prop.csv`` (no header: file name or id, then the target value) and the
    structure files it lists."""
    id_prop = root / 'id_prop.csv'
    if not id_prop.is_file():
        raise FileNotFoundError(f"'{id_prop}' not found: a folder dataset needs an "
                                f"id_prop.csv with lines 'file_name,target'")
    with open(id_prop, newline='', encoding='utf-8') as f:
        rows = [row for row in csv.reader(f) if row]
    rows = subset_rows(rows, data_cfg['max_crystals'], seed)

    crystals = []
    for line, row in enumerate(tqdm(rows, desc='reading structures', unit='crystal',
                                    disable=not progress), start=1):
        if len(row) < 2:
            raise ValueError(f"{id_prop} line {line}: expected 'file_name,target' (got {row})")
        data = read_structure(_find_structure(root, row[0].strip()))
        value = _parse_target(row[1], data_cfg['target'], f'{id_prop.name} line {line}')
        data.y = torch.tensor([[value]], dtype=torch.float)
        crystals.append(data)
    return crystals


def _load_cached_crystals(data_cfg: Dict[str, Any], transform: Optional[Callable],
                          progress: bool) -> List[Data]:
    """Loads every crystal through :mod:`pyg_wpdd.datasets`, which caches the graphs built by
    ``transform`` on disk, so later runs with the same graph settings skip the build."""
    from .datasets import CrystalCSVDataset, CrystalFolderDataset
    from .datasets._cache import default_cache_root

    dataset = data_cfg['dataset']
    cache_root = (resolve_path(data_cfg['cache_root']) if data_cfg['cache_root']
                  else default_cache_root())
    target = data_cfg['target']
    if dataset == 'folder':
        root = resolve_path(data_cfg['root'])
        if not root.is_dir():
            raise FileNotFoundError(f"data.root folder not found: '{root}'")
        # id_prop.csv has no header, so its first target column is used under the name
        # data.target.
        found = CrystalFolderDataset(str(cache_root / 'folder'), source_dir=str(root),
                                     target_columns=[0], pre_transform=transform,
                                     log=progress)
        return list(found)

    if dataset == 'perov_5':
        root = resolve_path(data_cfg['root']) if data_cfg['root'] else PEROV5_DIR
        paths = {split: root / f'{split}.csv' for split in data_cfg['splits']}
    else:
        path = resolve_path(data_cfg['root'])
        paths = {path.stem: path}

    crystals: List[Data] = []
    for split, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"CSV file not found: '{path}'")
        found = CrystalCSVDataset(str(cache_root / dataset), {split: path},
                                  cif_column=data_cfg['cif_column'], target_columns=[target],
                                  id_column=data_cfg['id_column'], split=split,
                                  pre_transform=transform, log=progress)
        crystals.extend(found)
    return crystals


def load_crystals(data_cfg: Dict[str, Any], transform: Optional[Callable], seed: int,
                  progress: bool = True) -> List[Data]:
    """Reads the crystals named by a config's data section and applies ``transform``.

    Without ``max_crystals`` all crystals are loaded through :mod:`pyg_wpdd.datasets`, which
    caches the built graphs under ``cache_root``. With ``max_crystals`` a seeded subset of
    the rows is read and transformed directly, without a cache, so that a small run does not
    pay for parsing the whole dataset. For ``perov_5`` the CSV files ``<root>/<split>.csv``
    of all ``splits`` are pooled in that order, because the copy shipped here has only
    ``val.csv`` and ``test.csv``. Crystals whose target is missing (NaN) are dropped.
    """
    dataset = data_cfg['dataset']
    if data_cfg['max_crystals'] is None:
        crystals = _load_cached_crystals(data_cfg, transform, progress)
    else:
        if dataset == 'perov_5':
            root = resolve_path(data_cfg['root']) if data_cfg['root'] else PEROV5_DIR
            crystals = _load_csv_crystals([root / f'{s}.csv' for s in data_cfg['splits']],
                                          data_cfg, seed, progress)
        elif dataset == 'csv':
            crystals = _load_csv_crystals([resolve_path(data_cfg['root'])], data_cfg, seed,
                                          progress)
        else:
            root = resolve_path(data_cfg['root'])
            if not root.is_dir():
                raise FileNotFoundError(f"data.root folder not found: '{root}'")
            crystals = _load_folder_crystals(root, data_cfg, seed, progress)
        crystals = transform_batch(transform, crystals, progress=progress,
                                   desc='building graphs')

    labelled = [data for data in crystals if bool(torch.isfinite(data.y).all())]
    if len(labelled) < len(crystals):
        warnings.warn(f'dropped {len(crystals) - len(labelled)} of {len(crystals)} crystals '
                      f"without a value for target '{data_cfg['target']}'", stacklevel=2)
    return labelled
