"""Shared crystals and a brute-force neighbour reference for the pyg_wpdd data tests."""
import itertools
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

DATA_DIR = Path(__file__).resolve().parents[2] / 'data' / 'crystals'


# Test modules of the data pipeline; the model tests in this folder keep their own settings.
_DATA_TEST_MODULES = ('test_io', 'test_neighbors', 'test_transforms', 'test_datasets')


@pytest.fixture(autouse=True)
def single_torch_thread(request):
    """Run each data-pipeline test with one intra-op thread, restoring the setting after.

    The tests use tiny tensors. On a shared, loaded machine two OpenMP threads make each
    small op wait for a descheduled thread, which slowed these tests several times over.
    """
    if not request.module.__name__.split('.')[-1].startswith(_DATA_TEST_MODULES):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


def make_crystal(pos, cell, z=None, pbc=(True, True, True)) -> Data:
    pos = torch.as_tensor(pos, dtype=torch.float32).reshape(-1, 3)
    z = torch.full((pos.shape[0],), 6) if z is None else torch.as_tensor(z).long()
    return Data(pos=pos, cell=torch.as_tensor(cell, dtype=torch.float32).reshape(1, 3, 3),
                z=z, pbc=torch.tensor([pbc]), num_nodes=pos.shape[0])


@pytest.fixture
def crystal():
    return make_crystal


@pytest.fixture
def skewed_cell():
    """A strongly sheared triclinic cell (angles far from 90 degrees) with 4 atoms."""
    cell = torch.tensor([[3.1, 0.0, 0.0], [2.8, 1.1, 0.0], [1.6, 0.9, 0.85]],
                        dtype=torch.float64)
    frac = torch.tensor([[0.0, 0.0, 0.0], [0.31, 0.12, 0.77], [0.66, 0.58, 0.21],
                         [0.92, 0.37, 0.49]], dtype=torch.float64)
    return make_crystal(frac @ cell, cell, z=[8, 14, 26, 8])


def brute_force_neighbors(pos, cell, pbc=(True, True, True), reach=8):
    """Return ``(dist [N, M], j [M], shift [M, 3])`` over all images within ``reach`` cells.

    Float64, no wrapping and no cleverness: every atom against every image of every atom
    for shifts in ``[-reach, reach]`` along each periodic direction.
    """
    pos = torch.as_tensor(pos, dtype=torch.float64)
    cell = torch.as_tensor(cell, dtype=torch.float64).reshape(3, 3)
    ranges = [range(-reach, reach + 1) if p else range(1) for p in pbc]
    shifts = torch.tensor(list(itertools.product(*ranges)), dtype=torch.float64)
    images = (pos.unsqueeze(0) + (shifts @ cell).unsqueeze(1)).reshape(-1, 3)
    j = torch.arange(pos.shape[0]).repeat(shifts.shape[0])
    shift = shifts.long().repeat_interleave(pos.shape[0], dim=0)
    dist = torch.cdist(pos, images, compute_mode='donot_use_mm_for_euclid_dist')
    return dist, j, shift


@pytest.fixture
def brute_force():
    return brute_force_neighbors
