from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ._base import CrystalInMemoryDataset
from ._cache import default_cache_root, default_data_dir
from .crystal_csv import CrystalCSVDataset
from .crystal_folder import CrystalFolderDataset

#: Targets in the Perov-5 CSV files (CDVAE release): heats of formation (eV/atom) and
#: direct and indirect band gaps (eV).
PEROV5_TARGETS = ('heat_ref', 'heat_all', 'dir_gap', 'ind_gap')
PEROV5_SPLITS = ('val', 'test')

DATASETS = ('perov_5', 'jarvis_sample')


def load_dataset(name: str, split: Optional[str] = None,
                 target: Union[str, Sequence[str], None] = None,
                 root: Optional[Union[str, Path]] = None,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 data_dir: Optional[Union[str, Path]] = None,
                 **kwargs) -> CrystalInMemoryDataset:
    r"""Load a crystal dataset shipped in the project's ``data/crystals/`` folder.

    - ``'perov_5'``: 18,928 perovskites with 5 atoms per cell (CDVAE release), of which the
      ``'val'`` (3,787) and ``'test'`` (3,785) splits are included. ``target`` is one or more of
      :data:`PEROV5_TARGETS` (default ``'heat_ref'``). There is no training split here: make
      one reproducibly from ``val`` with :func:`~pyg_wpdd.datasets.random_split`, for example
      ``train, val = random_split(load_dataset('perov_5', 'val'), [0.8, 0.2], seed=0)``.
    - ``'jarvis_sample'``: 50 JARVIS-DFT POSCAR files with a band gap (eV) in
      ``id_prop.csv``, including 1-atom cells and slabs. ``split`` and ``target`` must be
      :obj:`None`.

    The source files are only read. The processed cache goes to ``root``.

    Args:
        name (str): ``'perov_5'`` or ``'jarvis_sample'``.
        split (str, optional): ``'val'`` or ``'test'`` for Perov-5. (default: ``'val'`` for
            Perov-5)
        target (str or list of str, optional): Target column(s). (default: ``'heat_ref'``)
        root (str, optional): Cache folder. (default: ``$PYG_WPDD_CACHE`` or
            ``~/.cache/pyg_wpdd``, plus the dataset name)
        transform, pre_transform: as in :class:`torch_geometric.data.InMemoryDataset`.
        data_dir (str, optional): Folder holding ``crystals/``. (default: ``$PYG_WPDD_DATA``
            or the ``data/`` folder of the source checkout)
        **kwargs: Passed on to :class:`CrystalCSVDataset` or :class:`CrystalFolderDataset`.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    root = Path(root) if root is not None else default_cache_root() / name

    if name == 'perov_5':
        split = 'val' if split is None else split
        if split not in PEROV5_SPLITS:
            raise ValueError(
                f"Invalid split={split!r} for perov_5: only {PEROV5_SPLITS} are included. "
                'Make a training split with pyg_wpdd.datasets.random_split(dataset, '
                '[0.8, 0.2], seed=0).')
        targets = [target] if isinstance(target, str) else list(target or ['heat_ref'])
        unknown = [t for t in targets if t not in PEROV5_TARGETS]
        if unknown:
            raise ValueError(f'Invalid target(s) {unknown} for perov_5. Choose from '
                             f'{PEROV5_TARGETS}.')
        source = data_dir / 'crystals' / 'perov_5'
        return CrystalCSVDataset(root, {s: source / f'{s}.csv' for s in PEROV5_SPLITS},
                                 cif_column='cif', target_columns=targets,
                                 id_column='material_id', split=split, transform=transform,
                                 pre_transform=pre_transform, **kwargs)

    if name == 'jarvis_sample':
        if split is not None or target is not None:
            raise ValueError('jarvis_sample has one split and one target (band gap); pass '
                             'split=None and target=None.')
        return CrystalFolderDataset(root, source_dir=data_dir / 'crystals' / 'jarvis_sample',
                                    transform=transform, pre_transform=pre_transform, **kwargs)

    raise ValueError(f'Unknown dataset {name!r}. Choose one of {DATASETS}, or use '
                     'CrystalFolderDataset / CrystalCSVDataset for your own files.')
