"""The compiled and the PyTorch neighbour search on awkward crystals, against brute force.

Each case runs the compiled kernel (the CPU default) and the vectorised PyTorch search
(``PYG_WPDD_SEARCH=torch``). Edges and shifts must be identical, distances must agree, and
the distance tables must match brute-force enumeration of lattice images.
"""
import csv
import math
import sys

import pytest
import torch

from pyg_wpdd.io import read_cif_string, read_structure
from pyg_wpdd.neighbors import (periodic_knn, periodic_knn_and_distances_batch,
                                periodic_knn_batch, periodic_knn_distances_batch,
                                perpendicular_widths)

ENGINES = ['compiled', 'torch']

# Outputs are float32: at 40 Å one float32 step is about 4e-6 Å, so a relative tolerance is
# added to the absolute 1e-6 Å.
ATOL, RTOL = 1e-6, 1e-6


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Use one intra-op thread: the tensors are tiny and the test machine is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _select_engine(monkeypatch, engine):
    if engine == 'compiled':
        pytest.importorskip('numba')
        monkeypatch.delenv('PYG_WPDD_SEARCH', raising=False)
    else:
        monkeypatch.setenv('PYG_WPDD_SEARCH', 'torch')


@pytest.fixture
def both_engines(monkeypatch):
    """Return a function that calls a search with the compiled engine, then the PyTorch one."""
    pytest.importorskip('numba')

    def run(function, *args, **kwargs):
        results = []
        for engine in ENGINES:
            _select_engine(monkeypatch, engine)
            results.append(function(*args, **kwargs))
        return results

    return run


def _cell(a, b, c, alpha, beta, gamma):
    """Return lattice rows ``[3, 3]`` float64 from lengths (Å) and angles (degrees)."""
    alpha, beta, gamma = (math.radians(angle) for angle in (alpha, beta, gamma))
    cx = c * math.cos(beta)
    cy = c * (math.cos(alpha) - math.cos(beta) * math.cos(gamma)) / math.sin(gamma)
    return torch.tensor([[a, 0.0, 0.0],
                         [b * math.cos(gamma), b * math.sin(gamma), 0.0],
                         [cx, cy, math.sqrt(c * c - cx * cx - cy * cy)]], dtype=torch.float64)


def _rotation(seed):
    """Return a proper rotation matrix ``[3, 3]`` drawn from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


TRICLINIC = torch.tensor([[3.0, 0.0, 0.0], [0.8, 2.9, 0.0], [0.4, 0.3, 3.2]],
                         dtype=torch.float64)

# name: (cell rows, fractional coordinates, pbc). Rows along non-periodic directions may be
# zero (no vacuum given) or a real vacuum vector.
AWKWARD = {
    'one_atom_cubic': (torch.eye(3, dtype=torch.float64) * 2.5, [[0.0, 0.0, 0.0]],
                       [True, True, True]),
    'gamma_10_degrees': (_cell(3.0, 3.2, 3.4, 90, 90, 10),
                         [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8], [0.35, 0.9, 0.05]],
                         [True, True, True]),
    'gamma_170_degrees': (_cell(3.0, 3.0, 3.0, 85, 95, 170), [[0.0, 0.0, 0.0], [0.4, 0.5, 0.6]],
                          [True, True, True]),
    'all_angles_12_degrees': (_cell(3.0, 3.2, 3.4, 12, 12, 12),
                              [[0.0, 0.0, 0.0], [0.3, 0.6, 0.2]], [True, True, True]),
    'long_thin_50x': (torch.diag(torch.tensor([2.0, 2.0, 100.0], dtype=torch.float64)),
                      [[0.0, 0.0, 0.0], [0.5, 0.5, 0.3], [0.2, 0.7, 0.9]],
                      [True, True, True]),
    'flat_50x': (torch.diag(torch.tensor([50.0, 50.0, 1.0], dtype=torch.float64)),
                 [[0.0, 0.0, 0.0], [0.4, 0.3, 0.5]], [True, True, True]),
    'outside_cell': (TRICLINIC, [[-1e-17, 2.0, -3.5], [1.0, 0.0, 0.25], [0.5, 1.0, 1 - 1e-16]],
                     [True, True, True]),
    'on_cell_faces': (TRICLINIC, [[0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.5, 1.0, 1.0]],
                      [True, True, True]),
    'slab_zero_vacuum_row': (torch.tensor([[2.9, 0.0, 0.0], [1.2, 2.6, 0.0], [0.0, 0.0, 0.0]],
                                          dtype=torch.float64),
                             [[0.0, 0.0, 0.0], [0.5, 0.5, 1.5], [0.2, 0.7, -1.2]],
                             [True, True, False]),
    'slab_vacuum_row': (torch.tensor([[2.9, 0.0, 0.0], [1.2, 2.6, 0.0], [0.5, 0.4, 25.0]],
                                     dtype=torch.float64),
                        [[0.0, 0.0, 0.4], [0.5, 0.5, 0.45], [-0.8, 2.7, 0.5]],
                        [True, True, False]),
    'left_handed': (TRICLINIC[[1, 0, 2]], [[0.1, 0.2, 0.3], [0.7, 0.1, 0.9]], [True, True, True]),
    'one_atom_slab': (torch.tensor([[2.5, 0.0, 0.0], [1.25, 2.165, 0.0], [0.0, 0.0, 0.0]],
                                   dtype=torch.float64), [[0.3, 0.3, 5.0]], [True, True, False]),
    'one_atom_chain': (torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.2, 0.1, 2.4]],
                                    dtype=torch.float64), [[1.0, -2.0, 7.5]], [False, False, True]),
    'chain_along_b': (torch.tensor([[0.0, 0.0, 0.0], [0.3, 2.5, 0.1], [0.0, 0.0, 0.0]],
                                   dtype=torch.float64),
                      [[0.0, 0.0, 0.0], [1.0, 0.5, 0.7], [-0.6, 3.2, 0.0]],
                      [False, True, False]),
}


def _positions(cell, frac, pbc):
    """Return Cartesian positions: fractional along periodic rows, Å along the others."""
    frac = torch.tensor(frac, dtype=torch.float64)
    rows = torch.where(torch.tensor(pbc).unsqueeze(1) | (cell.abs().sum(1, keepdim=True) > 0),
                       cell, torch.eye(3, dtype=torch.float64))
    return frac @ rows


def _molecule():
    generator = torch.Generator().manual_seed(3)
    pos = torch.rand(8, 3, generator=generator, dtype=torch.float64) * 4.0
    return pos, torch.zeros(3, 3, dtype=torch.float64), [False, False, False]


def _awkward_structure(name):
    if name == 'molecule':
        return _molecule()
    cell, frac, pbc = AWKWARD[name]
    return _positions(cell, frac, pbc), cell, pbc


def _brute_force_table(brute_force, pos, cell, pbc, k, radius):
    """Return the ``k`` smallest brute-force distances per atom, ``[num_atoms, k]`` float64.

    Enough shifts are enumerated to reach ``radius`` Å from atoms anywhere in the cell, and
    the atoms' own offsets from the cell are added to the shift range.
    """
    periodic = torch.tensor(pbc)
    if not bool(periodic.any()):
        dist, _, _ = brute_force(pos, cell, pbc, 0)
        dist[dist < 1e-9] = math.inf
        return dist.sort(dim=1).values[:, :k]

    # Non-periodic rows only need to make the cell invertible here.
    completed = cell.clone()
    completed[~periodic] = torch.eye(3, dtype=torch.float64)[~periodic]
    frac = torch.linalg.solve(completed.T, pos.T).T
    widths = perpendicular_widths(completed)[periodic]
    offset = math.ceil(float(frac[:, periodic].abs().max()))
    reach = math.ceil(radius / float(widths.min())) + offset + 2
    dist, _, _ = brute_force(pos, cell, pbc, reach)
    # Only the zero-shift self pair sits at 0: these structures have no coincident atoms.
    dist[dist < 1e-9] = math.inf
    return dist.sort(dim=1).values[:, :k]


def _assert_engines_agree(compiled, vectorised):
    """Check ``(edges, table)`` pairs of the two engines, each property its own assert."""
    (edges, table), (reference, reference_table) = compiled, vectorised
    assert torch.equal(edges.edge_index, reference.edge_index)
    assert torch.equal(edges.edge_shift, reference.edge_shift)
    assert torch.allclose(edges.edge_dist, reference.edge_dist, atol=ATOL, rtol=RTOL)
    assert torch.allclose(edges.edge_vec, reference.edge_vec, atol=1e-5, rtol=RTOL)
    assert torch.allclose(table, reference_table, atol=ATOL, rtol=RTOL)


def _assert_edges_match_table(edges, full_table, k, tie_tol=1e-6):
    """Check per centre the kept edges against a longer brute-force table ``[N, > k]``."""
    for i in range(full_table.shape[0]):
        reference = full_table[i]
        expected = reference[reference <= reference[k - 1] + tie_tol]
        found = edges.edge_dist[edges.edge_index[1] == i].double()
        assert found.numel() == expected.numel()
        assert torch.allclose(found, expected, atol=ATOL, rtol=RTOL)


AWKWARD_NAMES = list(AWKWARD) + ['molecule']


@pytest.mark.parametrize('k', [1, 12, 200])
@pytest.mark.parametrize('name', AWKWARD_NAMES)
def test_awkward_cell_engines_and_brute_force(both_engines, brute_force, name, k):
    pos, cell, pbc = _awkward_structure(name)
    if not any(pbc):
        # A molecule has only num_atoms - 1 neighbours.
        k = min(k, pos.shape[0] - 1)
    structures = [(pos, cell, pbc)]
    compiled, vectorised = both_engines(periodic_knn_and_distances_batch, structures, k=k,
                                        k_dist=k)
    _assert_engines_agree(compiled[0], vectorised[0])

    edges, table = compiled[0]
    # Extra columns hold the candidates tied with the k-th distance.
    depth = min(k + 40, pos.shape[0] - 1) if not any(pbc) else k + 40
    radius = float(edges.edge_dist.max()) + 1.0
    reference = _brute_force_table(brute_force, pos, cell, pbc, depth, radius)
    assert torch.allclose(table.double(), reference[:, :k], atol=ATOL, rtol=RTOL)
    _assert_edges_match_table(edges, reference, k)


LATTICES = {
    'fcc': (torch.eye(3, dtype=torch.float64) * 3.6,
            [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
    'bcc': (torch.eye(3, dtype=torch.float64) * 2.87, [[0, 0, 0], [0.5, 0.5, 0.5]]),
    'hcp': (torch.tensor([[2.95, 0.0, 0.0], [-1.475, 2.95 * math.sqrt(3) / 2, 0.0],
                          [0.0, 0.0, 2.95 * math.sqrt(8 / 3)]], dtype=torch.float64),
            [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
    'rock_salt': (torch.eye(3, dtype=torch.float64) * 5.64,
                  [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                   [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]),
}


def _symmetric_structure(lattice, noise, rotated):
    cell, frac = LATTICES[lattice]
    pos = torch.tensor(frac, dtype=torch.float64) @ cell
    generator = torch.Generator().manual_seed(7)
    pos = pos + noise * torch.randn(pos.shape, generator=generator, dtype=torch.float64)
    if rotated:
        rotation = _rotation(11)
        pos, cell = pos @ rotation.T, cell @ rotation.T
    return pos, cell, [True, True, True]


@pytest.mark.parametrize('rotated', [False, True])
@pytest.mark.parametrize('noise', [0.0, 1e-9, 1e-4])
@pytest.mark.parametrize('lattice', list(LATTICES))
def test_symmetric_cell_ties(both_engines, brute_force, lattice, noise, rotated):
    pos, cell, pbc = _symmetric_structure(lattice, noise, rotated)
    reference = _brute_force_table(brute_force, pos, cell, pbc, 120, 12.0)
    for k in [1, 12, 13, 50]:
        compiled, vectorised = both_engines(periodic_knn_and_distances_batch,
                                            [(pos, cell, pbc)], k=k, k_dist=k)
        _assert_engines_agree(compiled[0], vectorised[0])
        edges, table = compiled[0]
        assert torch.allclose(table.double(), reference[:, :k], atol=ATOL, rtol=RTOL)
        _assert_edges_match_table(edges, reference, k)


def _mixed_batch():
    """Return all awkward and symmetric structures with varied dtypes and input layouts."""
    structures = []
    names = AWKWARD_NAMES + [f'{lattice}_{noise}' for lattice in LATTICES
                             for noise in (0.0, 1e-4)]
    for position, name in enumerate(names):
        if name in AWKWARD_NAMES:
            pos, cell, pbc = _awkward_structure(name)
        else:
            lattice, noise = name.rsplit('_', 1)
            pos, cell, pbc = _symmetric_structure(lattice, float(noise), rotated=True)
        dtype = torch.float32 if position % 2 else torch.float64
        pos, cell = pos.to(dtype), cell.to(dtype)
        if position % 3 == 0:
            cell = cell.reshape(1, 3, 3)
        pbc = pbc if position % 4 == 0 else torch.tensor([pbc])
        structures.append((pos, cell, pbc))
    return structures


@pytest.mark.parametrize('k, k_dist', [(1, 1), (6, 7)])
def test_mixed_batch_engines_and_one_by_one(both_engines, k, k_dist):
    structures = _mixed_batch()
    compiled, vectorised = both_engines(periodic_knn_and_distances_batch, structures, k=k,
                                        k_dist=k_dist)
    assert len(compiled) == len(structures)
    for position, structure in enumerate(structures):
        _assert_engines_agree(compiled[position], vectorised[position])

        # Results must not depend on the neighbours in the batch.
        alone, _ = both_engines(periodic_knn_and_distances_batch, [structure], k=k,
                                k_dist=k_dist)
        _assert_engines_agree(compiled[position], alone[0])


def _embedded_crystals(data_dir):
    csv.field_size_limit(sys.maxsize)
    with open(data_dir / 'perov_5' / 'test.csv', newline='') as handle:
        rows = [row for _, row in zip(range(80), csv.DictReader(handle))]
    structures = [read_cif_string(row['cif'], row['material_id']) for row in rows]
    structures += [read_structure(path)
                   for path in sorted((data_dir / 'jarvis_sample').glob('*.vasp'))]
    return [(data.pos, data.cell, data.pbc) for data in structures]


@pytest.mark.parametrize('k, k_dist', [(1, 100), (50, 5)])
def test_embedded_crystals_engines_agree(both_engines, data_dir, k, k_dist):
    structures = _embedded_crystals(data_dir)
    compiled, vectorised = both_engines(periodic_knn_and_distances_batch, structures, k=k,
                                        k_dist=k_dist)
    assert len(compiled) == len(structures)
    for position in range(len(structures)):
        _assert_engines_agree(compiled[position], vectorised[position])


@pytest.mark.parametrize('function', [periodic_knn_batch, periodic_knn_distances_batch,
                                      periodic_knn_and_distances_batch])
@pytest.mark.parametrize('engine', ENGINES)
def test_empty_batch_returns_empty_list(monkeypatch, engine, function):
    _select_engine(monkeypatch, engine)
    assert function([]) == []


@pytest.mark.parametrize('engine', ENGINES)
def test_gradients_flow_through_edge_vectors(monkeypatch, engine):
    """Gradients of edge vectors and distances reach pos and cell in both engines."""
    cell_leaf = _cell(3.0, 3.2, 3.4, 70, 80, 20).requires_grad_()
    pos_leaf = _positions(TRICLINIC, AWKWARD['outside_cell'][1], [True] * 3).requires_grad_()

    _select_engine(monkeypatch, engine)
    edges = periodic_knn(pos_leaf, cell_leaf, k=8)
    loss = (edges.edge_vec.double() ** 2).sum() + edges.edge_dist.double().sum()
    pos_grad, cell_grad = torch.autograd.grad(loss, [pos_leaf, cell_leaf])

    # Reference: the same edges rebuilt by hand from the returned shifts.
    j, i = edges.edge_index
    vec = pos_leaf[j] + edges.edge_shift.double() @ cell_leaf - pos_leaf[i]
    expected = (vec ** 2).sum() + torch.linalg.vector_norm(vec, dim=-1).sum()
    expected_pos_grad, expected_cell_grad = torch.autograd.grad(expected, [pos_leaf, cell_leaf])
    assert torch.allclose(pos_grad, expected_pos_grad, atol=1e-4)
    assert torch.allclose(cell_grad, expected_cell_grad, atol=1e-4)
    assert torch.allclose(edges.edge_vec.detach().double(), vec.detach(), atol=1e-5)
