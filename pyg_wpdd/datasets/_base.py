"""Processing shared by the crystal datasets: read, filter, transform, save."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch_geometric.data import Data, InMemoryDataset
from tqdm.auto import tqdm

from ..transforms.batched import transform_batch
from ._cache import save_atomic

ON_ERROR = ('raise', 'skip')


class CrystalInMemoryDataset(InMemoryDataset):
    """Base class: subclasses list their records and read one record into a ``Data``.

    The processed file lives in ``<root>/processed/<prefix>_<hash>/`` where the hash covers
    the source files, the targets, the reader options and the reprs of ``pre_transform`` and
    ``pre_filter``. Changing any of them builds a new cache next to the old one and leaves
    the old one untouched.
    """

    #: Shown in the progress bar.
    progress_label = 'reading crystals'

    def __init__(self, root: str, source_dir: Path, cache_key: str, prefix: str,
                 transform: Optional[Callable] = None, pre_transform: Optional[Callable] = None,
                 pre_filter: Optional[Callable] = None, on_error: str = 'raise',
                 log: bool = True, force_reload: bool = False) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f'Invalid on_error={on_error!r}. Use one of {ON_ERROR}.')
        self.source_dir = Path(source_dir)
        self.on_error = on_error
        self.cache_key = cache_key
        self.prefix = prefix
        super().__init__(str(root), transform, pre_transform, pre_filter, log=log,
                         force_reload=force_reload)
        self.load(self.processed_paths[0])

    @property
    def raw_dir(self) -> str:
        return str(self.source_dir)

    @property
    def processed_dir(self) -> str:
        return str(Path(self.root) / 'processed' / f'{self.prefix}_{self.cache_key}')

    @property
    def processed_file_names(self) -> List[str]:
        return [f'data_{self.cache_key}.pt']

    def download(self) -> None:
        missing = [p for p in self.raw_paths if not Path(p).exists()]
        raise ValueError(f'Missing source file(s) {missing}. This dataset reads local files '
                         'only and downloads nothing; check the path arguments.')

    def records(self) -> Sequence[Tuple[str, object]]:
        """Return ``(material_id, record)`` pairs for :meth:`read_record`."""
        raise NotImplementedError

    def read_record(self, material_id: str, record: object) -> Data:
        """Read one record into a ``Data`` with ``y`` and ``material_id`` set."""
        raise NotImplementedError

    def process(self) -> None:
        data_list: List[Data] = []
        skipped: List[str] = []
        for material_id, record in tqdm(self.records(), desc=self.progress_label,
                                        unit='crystal', disable=not self.log):
            try:
                data_list.append(self.read_record(material_id, record))
            except ValueError as error:
                if self.on_error == 'raise':
                    raise ValueError(f'{error} (pass on_error="skip" to skip such records)'
                                     ) from error
                skipped.append(f'{material_id}: {error}')
        if skipped:
            warnings.warn(f'Skipped {len(skipped)} unreadable record(s), first: {skipped[0]}',
                          stacklevel=2)

        if self.pre_filter is not None:
            data_list = [data for data in data_list if self.pre_filter(data)]
        data_list = transform_batch(self.pre_transform, data_list, progress=self.log,
                                    desc='pre_transform')
        if not data_list:
            raise ValueError(f'No crystals left to save in {self.processed_dir}: all records '
                             'were skipped or filtered out.')
        save_atomic(data_list, self.processed_paths[0])


def targets_tensor(values: Sequence[float]) -> torch.Tensor:
    """Return targets as ``[1, num_targets]`` float32."""
    return torch.tensor([list(values)], dtype=torch.float32)
