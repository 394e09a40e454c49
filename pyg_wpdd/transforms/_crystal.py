"""Shared input checks for the crystal transforms."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor
from torch_geometric.data import Data


def crystal_tensors(data: Data, transform: str) -> Tuple[Tensor, Tensor, Tensor]:
    """Return ``(pos [N, 3], cell [3, 3], pbc [3])`` of one crystal, checking they exist."""
    # Item access: several times cheaper than Data.__getattr__, which adds up over datasets.
    try:
        pos, cell = data['pos'], data['cell']
    except KeyError:
        pos = cell = None
    if pos is None or cell is None:
        missing = [key for key in ('pos', 'cell') if getattr(data, key, None) is None]
        raise ValueError(
            f'{transform} needs data.{" and data.".join(missing)}. Build the Data with '
            'pyg_wpdd.read_structure() or give pos [num_atoms, 3] and cell [1, 3, 3].')
    if cell.numel() != 9:
        raise ValueError(
            f'{transform} works on one crystal at a time, but data.cell has shape '
            f'{tuple(cell.shape)}. Apply it as a (pre_)transform before batching.')
    try:
        pbc = data['pbc']
    except KeyError:
        pbc = None
    if pbc is None:
        pbc = torch.ones(3, dtype=torch.bool, device=pos.device)
    if cell.shape != (3, 3):
        cell = cell.reshape(3, 3)
    if pbc.shape != (3,):
        pbc = pbc.reshape(3)
    return pos, cell, pbc
