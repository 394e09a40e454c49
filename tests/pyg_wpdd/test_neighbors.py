import math

import pytest
import torch

from pyg_wpdd.neighbors import (minimum_image_distances, periodic_knn,
                                periodic_knn_and_distances_batch, periodic_knn_batch,
                                periodic_knn_distances, perpendicular_widths)

# Every test here runs on both CPU engines: the compiled kernel (default) and the vectorised
# PyTorch search, which CUDA tensors always take.
ENGINES = ['compiled', 'torch']


@pytest.fixture(autouse=True, params=ENGINES)
def search_engine(request, monkeypatch):
    if request.param == 'compiled':
        pytest.importorskip('numba')
        monkeypatch.delenv('PYG_WPDD_SEARCH', raising=False)
    else:
        monkeypatch.setenv('PYG_WPDD_SEARCH', 'torch')
    return request.param


def _assert_matches_brute_force(data, k, brute_force, reach=8, pbc=(True, True, True)):
    """Compare the kept distances of every centre with brute-force enumeration."""
    pos = data.pos.double()
    cell = data.cell[0].double()
    result = periodic_knn(pos, cell, torch.tensor(pbc), k=k)
    dist, _, _ = brute_force(pos, cell, pbc, reach)
    dist[dist < 1e-9] = math.inf
    for i in range(pos.shape[0]):
        reference = dist[i].sort().values
        kth = reference[k - 1]
        expected = reference[reference <= kth + 1e-6]
        found = result.edge_dist[result.edge_index[1] == i].double()
        assert found.numel() == expected.numel()
        assert torch.allclose(found, expected, atol=1e-5)
    return result


@pytest.mark.parametrize('k, count, shells', [
    (6, 6, [1.0]),
    (7, 18, [1.0, math.sqrt(2)]),
    (19, 26, [1.0, math.sqrt(2), math.sqrt(3)]),
])
def test_one_atom_cubic_cell(k, count, shells):
    a = 2.5
    result = periodic_knn(torch.zeros(1, 3), torch.eye(3) * a, k=k)
    assert result.edge_index.shape == (2, count)
    assert torch.all(result.edge_index == 0)
    found = torch.unique(result.edge_dist.double().round(decimals=5))
    assert torch.allclose(found, a * torch.tensor(shells, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize('lattice, k, expected_edges, first_shell', [
    ('fcc', 12, 12, 1 / math.sqrt(2)),
    ('fcc', 13, 18, 1 / math.sqrt(2)),
    ('bcc', 8, 8, math.sqrt(3) / 2),
    ('bcc', 9, 14, math.sqrt(3) / 2),
])
def test_ties_keep_whole_shell(crystal, lattice, k, expected_edges, first_shell):
    a = 3.6
    basis = {'fcc': [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
             'bcc': [[0, 0, 0], [0.5, 0.5, 0.5]]}[lattice]
    data = crystal(torch.tensor(basis) * a, torch.eye(3) * a)
    result = periodic_knn(data.pos, data.cell, k=k)
    per_centre = torch.bincount(result.edge_index[1])
    assert torch.all(per_centre == expected_edges)
    assert math.isclose(float(result.edge_dist.min()), a * first_shell, abs_tol=1e-5)


@pytest.mark.parametrize('k', [1, 8, 30, 60])
def test_skewed_triclinic_matches_brute_force(skewed_cell, brute_force, k):
    result = _assert_matches_brute_force(skewed_cell, k, brute_force, reach=10)
    assert result.edge_index.shape[1] >= k * skewed_cell.num_nodes


@pytest.mark.parametrize('frac', [
    [[0.001, 0.5, 0.999], [0.999, 0.001, 0.5]],
    [[0.0, 0.0, 0.0], [1e-9, 0.999999999, 0.5]],
    [[0.3, 0.3, 0.45], [0.31, 0.32, 0.55]],
])
def test_wrapped_spread_cases_match_brute_force(crystal, brute_force, frac):
    # Atoms at both faces of the cell (spread near 1) and atoms packed in a thin layer
    # (spread near 0) set the shift range in opposite extremes.
    cell = torch.tensor([[4.0, 0.0, 0.0], [1.7, 3.6, 0.0], [0.9, 1.1, 9.0]])
    data = crystal(torch.tensor(frac) @ cell, cell)
    _assert_matches_brute_force(data, 24, brute_force, reach=8)


def test_skewed_cell_float64_distances(skewed_cell, brute_force):
    # The search runs in float64; compare its raw distances (before the float32 output)
    # through periodic_knn_distances on float64 input to 1e-6 Å.
    pos, cell = skewed_cell.pos.double(), skewed_cell.cell[0].double()
    found = periodic_knn_distances(pos, cell, k=40).double()
    dist, _, _ = brute_force(pos, cell, reach=10)
    dist[dist < 1e-9] = math.inf
    expected = dist.sort(dim=1).values[:, :40]
    assert torch.allclose(found, expected, atol=1e-5)

    # float32 rounding of ~5 Å distances is ~3e-7 Å, so the 1e-6 Å bound survives the cast too.
    assert float((found - expected).abs().max()) < 1e-6


def test_edge_vectors_and_shifts_consistent(skewed_cell):
    # Positions outside the cell must be handled: shift two atoms by lattice vectors.
    pos = skewed_cell.pos.double().clone()
    cell = skewed_cell.cell[0].double()
    pos[1] += 2 * cell[0] - cell[2]
    pos[3] -= 3 * cell[1]
    result = periodic_knn(pos, cell, k=20)
    j, i = result.edge_index
    vec = pos[j] + result.edge_shift.double() @ cell - pos[i]
    assert torch.allclose(result.edge_vec.double(), vec, atol=1e-5)
    assert torch.allclose(result.edge_dist.double(), vec.norm(dim=1), atol=1e-5)

    wrapped = periodic_knn(skewed_cell.pos, skewed_cell.cell, k=20)
    assert torch.allclose(result.edge_dist, wrapped.edge_dist, atol=1e-5)


def test_edges_sorted_by_centre_then_distance(skewed_cell):
    result = periodic_knn(skewed_cell.pos, skewed_cell.cell, k=25)
    centre = result.edge_index[1]
    assert torch.all(centre[1:] >= centre[:-1])
    same = centre[1:] == centre[:-1]
    assert torch.all(result.edge_dist[1:][same] >= result.edge_dist[:-1][same] - 1e-6)


def test_tie_order_by_neighbor_then_shift(crystal):
    a = 3.0
    data = crystal(torch.zeros(1, 3), torch.eye(3) * a)
    result = periodic_knn(data.pos, data.cell, k=6)
    shifts = [tuple(s) for s in result.edge_shift.tolist()]
    assert shifts == sorted(shifts)


def test_self_images_without_zero_distance(crystal):
    data = crystal([[0.0, 0.0, 0.0], [1.5, 1.5, 1.5]], torch.eye(3) * 3.0)
    result = periodic_knn(data.pos, data.cell, k=14)
    assert float(result.edge_dist.min()) > 1.0
    self_loops = result.edge_index[0] == result.edge_index[1]
    assert bool(self_loops.any())
    assert torch.all(result.edge_shift[self_loops].abs().sum(dim=1) > 0)


@pytest.mark.parametrize('pbc', [(True, True, True), (True, True, False)])
def test_slab_with_vacuum_terminates(crystal, brute_force, pbc):
    # A two-layer slab, 3 Å in-plane cell, with 20 Å of vacuum along c.
    cell = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 22.0]])
    data = crystal([[0.0, 0.0, 0.0], [1.5, 1.5, 2.0]], cell)
    _assert_matches_brute_force(data, 30, brute_force, reach=6, pbc=pbc)


def test_slab_with_zero_vacuum_vector(crystal, brute_force):
    cell = torch.tensor([[3.0, 0.0, 0.0], [1.0, 2.9, 0.0], [0.0, 0.0, 0.0]])
    data = crystal([[0.0, 0.0, 0.0], [1.5, 1.0, 2.0]], cell, pbc=(True, True, False))
    result = periodic_knn(data.pos, data.cell, data.pbc, k=12)
    assert torch.all(result.edge_shift[:, 2] == 0)
    full = torch.tensor([[3.0, 0.0, 0.0], [1.0, 2.9, 0.0], [0.0, 0.0, 1.0]])
    reference = crystal(data.pos, full)
    _assert_matches_brute_force(reference, 12, brute_force, reach=6,
                                pbc=(True, True, False))


def test_chain_periodic_in_one_direction(crystal):
    data = crystal([[0.0, 0.0, 0.0]], torch.diag(torch.tensor([2.0, 0.0, 0.0])),
                   pbc=(True, False, False))
    result = periodic_knn(data.pos, data.cell, data.pbc, k=4)
    assert torch.allclose(result.edge_dist, torch.tensor([2.0, 2.0, 4.0, 4.0]), atol=1e-6)


def test_non_periodic_molecule(crystal):
    data = crystal([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0]], torch.zeros(3, 3),
                   pbc=(False, False, False))
    result = periodic_knn(data.pos, data.cell, data.pbc, k=2)
    assert result.edge_index.shape == (2, 6)
    assert torch.all(result.edge_shift == 0)


def test_batched_equals_one_by_one(skewed_cell, crystal):
    structures = [
        (skewed_cell.pos, skewed_cell.cell, None),
        (torch.zeros(1, 3), torch.eye(3) * 2.0, None),
        (torch.tensor([[0.0, 0, 0], [0.5, 0.5, 0.5]]) * 3.0, torch.eye(3) * 3.0, None),
        (torch.tensor([[0.0, 0, 0], [0.4, 0.5, 0.6]]) * 3.3, torch.eye(3) * 3.3, None),
        (torch.tensor([[0.0, 0, 0], [1.5, 1.5, 2.0]]),
         torch.diag(torch.tensor([3.0, 3.0, 22.0])), None),
    ]
    batched = periodic_knn_batch(structures, k=18)
    for structure, together in zip(structures, batched):
        alone = periodic_knn(*structure, k=18)
        assert torch.equal(together.edge_index, alone.edge_index)
        assert torch.equal(together.edge_shift, alone.edge_shift)
        assert torch.allclose(together.edge_dist, alone.edge_dist, atol=1e-6)


def _many_small_cells(count):
    """Return ``count`` 5-atom cells: cubic, sheared, and with atoms near opposite faces."""
    generator = torch.Generator().manual_seed(7)
    structures = []
    for index in range(count):
        a = 3.5 + float(torch.rand((), generator=generator))
        cell = torch.eye(3, dtype=torch.float64) * a
        if index % 3 == 1:
            cell[1, 0] = 0.4 * a
            cell[2, 1] = -0.3 * a
        frac = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0],
                             [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64)
        frac = frac + 0.04 * torch.randn(5, 3, generator=generator, dtype=torch.float64)
        structures.append((frac @ cell, cell, None))
    return structures


def test_large_batch_matches_one_by_one():
    # 120 cells of 5 atoms form one block large enough for the pruned shift sets. Alone,
    # each cell takes the full box of shifts.
    structures = _many_small_cells(120)
    batched = periodic_knn_and_distances_batch(structures, k=16, k_dist=50)
    for structure, (edges, distances) in zip(structures, batched):
        alone = periodic_knn(*structure, k=16)
        assert torch.equal(edges.edge_index, alone.edge_index)
        assert torch.equal(edges.edge_shift, alone.edge_shift)
        assert torch.allclose(edges.edge_dist, alone.edge_dist, atol=1e-6)
        assert torch.allclose(distances, periodic_knn_distances(*structure, k=50), atol=1e-6)


def test_large_batch_matches_brute_force(brute_force):
    structures = _many_small_cells(120)
    batched = periodic_knn_and_distances_batch(structures, k=16, k_dist=50)
    for (pos, cell, _), (_, distances) in zip(structures[:12], batched[:12]):
        dist, _, _ = brute_force(pos, cell, reach=4)
        dist[dist < 1e-9] = math.inf
        expected = dist.sort(dim=1).values[:, :50]
        assert torch.allclose(distances.double(), expected, atol=1e-6)


def test_minimum_image_matches_brute_force(skewed_cell, brute_force):
    pos, cell = skewed_cell.pos.double(), skewed_cell.cell[0].double()
    found = minimum_image_distances(pos, cell)
    dist, j, _ = brute_force(pos, cell, reach=10)
    m = pos.shape[0]
    expected = torch.stack([torch.stack([dist[i, j == jj].min() for jj in range(m)])
                            for i in range(m)])
    expected.fill_diagonal_(0.0)
    assert torch.allclose(found, expected, atol=1e-9)


def test_perpendicular_widths_of_sheared_cell():
    cell = torch.tensor([[2.0, 0.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 3.0]],
                        dtype=torch.float64)
    widths = perpendicular_widths(cell)
    # Plane (b, c) has normal (1, -5, 0)/sqrt(26); a projects to 2/sqrt(26) on it.
    assert math.isclose(float(widths[0]), 2 / math.sqrt(26), rel_tol=1e-12)
    assert math.isclose(float(widths[1]), 1.0, rel_tol=1e-12)
    assert math.isclose(float(widths[2]), 3.0, rel_tol=1e-12)


@pytest.mark.parametrize('kwargs, match', [
    (dict(k=0), 'k must be a positive integer'),
    (dict(k=2.5), 'k must be a positive integer'),
    (dict(tie_tol=-1.0), 'tie_tol'),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        periodic_knn(torch.zeros(1, 3), torch.eye(3), **kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r'shape \[num_atoms, 3\]'):
        periodic_knn(torch.zeros(4), torch.eye(3))
    with pytest.raises(ValueError, match='singular cell'):
        periodic_knn(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ValueError, match='fewer than k=5'):
        periodic_knn(torch.zeros(2, 3), torch.eye(3), torch.zeros(3, dtype=torch.bool), k=5)
    with pytest.raises(ValueError, match='NaN'):
        periodic_knn(torch.full((1, 3), float('nan')), torch.eye(3))


def test_nearly_flat_cell_raises():
    # Volume 3.75e-8 Å^3 passes the singular-cell check, but a 1.5e-9 Å wide periodic direction
    # would need millions of lattice shifts.
    cell = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.5e-9]],
                        dtype=torch.float64)
    with pytest.raises(ValueError, match='lattice shifts'):
        periodic_knn(torch.zeros(1, 3, dtype=torch.float64), cell, k=16)


def test_infinite_tie_tol_raises():
    with pytest.raises(ValueError, match='tie_tol must be a finite'):
        periodic_knn(torch.zeros(1, 3), torch.eye(3), k=4, tie_tol=float('inf'))
