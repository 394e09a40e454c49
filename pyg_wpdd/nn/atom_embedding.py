import json
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor

from ..resources import ATOM_INIT_PATH

NODE_FEATURE_MODES = ('cgcnn', 'embedding')


def load_atom_table(path: Union[str, Path, None] = None, max_z: int = 100) -> Tensor:
    r"""Loads a CGCNN-style element table (a JSON object that maps atomic numbers to feature
    lists of equal length) into a dense tensor of shape :obj:`[max_z + 1, num_features]`.
    Rows of elements missing from the file are NaN, so that their use can be detected.

    Args:
        path (str or Path, optional): JSON file. The CGCNN table shipped with the package
            (92 values, Z = 1-100) is used if :obj:`None`. (default: :obj:`None`)
        max_z (int): Largest atomic number to keep. (default: :obj:`100`)
    """
    path = Path(path) if path is not None else ATOM_INIT_PATH
    if not path.is_file():
        raise FileNotFoundError(f"element feature table not found: '{path}'")
    with open(path, encoding='utf-8') as f:
        raw = json.load(f)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"'{path}' must contain a JSON object that maps atomic numbers to "
                         f"feature lists")

    lengths = {len(v) for v in raw.values()}
    if len(lengths) != 1:
        raise ValueError(f"feature lists in '{path}' differ in length: {sorted(lengths)}")
    num_features = lengths.pop()

    table = torch.full((max_z + 1, num_features), float('nan'))
    for key, values in raw.items():
        z = int(key)
        if 1 <= z <= max_z:
            table[z] = torch.tensor(values, dtype=torch.float)
    return table


class AtomEmbedding(torch.nn.Module):
    r"""Maps atomic numbers to node features of width :obj:`channels`.

    In :obj:`'cgcnn'` mode each element is described by the fixed, one-hot encoded 92-value
    element table of CGCNN (Xie and Grossman, `Phys. Rev. Lett. 120, 145301 (2018)
    <https://doi.org/10.1103/PhysRevLett.120.145301>`_), followed by a learned linear map. In
    :obj:`'embedding'` mode a learned vector per atomic number is used instead.

    Args:
        channels (int): Output width.
        mode (str): :obj:`'cgcnn'` or :obj:`'embedding'`. (default: :obj:`'cgcnn'`)
        max_z (int): Largest atomic number accepted. (default: :obj:`100`)
        table_path (str or Path, optional): Element table for :obj:`'cgcnn'` mode; the CGCNN
            table shipped with the package if :obj:`None`. The table is stored in the
            :obj:`state_dict`. (default: :obj:`None`)

    Shapes:
        - **input:** atomic numbers :math:`[num\_atoms]` (long)
        - **output:** :math:`[num\_atoms, channels]`
    """
    def __init__(self, channels: int, mode: str = 'cgcnn', max_z: int = 100,
                 table_path: Optional[Union[str, Path]] = None):
        super().__init__()
        if mode not in NODE_FEATURE_MODES:
            raise ValueError(f"unknown node feature mode '{mode}': use one of "
                             f"{list(NODE_FEATURE_MODES)}")
        self.channels = channels
        self.mode = mode
        self.max_z = max_z

        if mode == 'cgcnn':
            table = load_atom_table(table_path, max_z)
            known = ~torch.isnan(table).any(dim=-1)
            self.register_buffer('table', torch.nan_to_num(table, nan=0.0))
            self.register_buffer('known', known)
            self.lin = torch.nn.Linear(table.size(-1), channels)
            self.embedding = None
        else:
            self.lin = None
            self.embedding = torch.nn.Embedding(max_z + 1, channels)

        self.reset_parameters()

    def reset_parameters(self):
        if self.lin is not None:
            self.lin.reset_parameters()
        if self.embedding is not None:
            self.embedding.reset_parameters()

    def forward(self, z: Tensor) -> Tensor:
        if z.dtype != torch.long:
            raise TypeError(f"atomic numbers 'z' must be a long tensor (got {z.dtype})")
        if z.numel() > 0:
            low, high = int(z.min()), int(z.max())
            if low < 1 or high > self.max_z:
                raise ValueError(f"atomic numbers must lie in [1, {self.max_z}] "
                                 f"(got {low}..{high})")

        if self.embedding is not None:
            return self.embedding(z)

        if not bool(self.known[z].all()):
            missing = sorted(set(z[~self.known[z]].tolist()))
            raise ValueError(f"the element feature table has no row for atomic numbers "
                             f"{missing}: pass a table that covers them or use "
                             f"node_features='embedding'")
        return self.lin(self.table[z])

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.channels}, mode={self.mode}, '
                f'max_z={self.max_z})')
