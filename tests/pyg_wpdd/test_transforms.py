import math

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.loader import DataLoader

from pyg_wpdd.transforms import (PDD, UPDD, WPDD, PeriodicKNNGraph, atom_weights,
                                 collapse_rows, pdd, pdd_distance, transform_batch)


def _supercell(data, reps, crystal):
    cell = data.cell[0]
    shifts = torch.cartesian_prod(*[torch.arange(r) for r in reps]).float()
    pos = (data.pos.unsqueeze(0) + (shifts @ cell).unsqueeze(1)).reshape(-1, 3)
    z = data.z.repeat(shifts.shape[0])
    return crystal(pos, torch.diag(torch.tensor(reps, dtype=torch.float32)) @ cell, z=z)


def _random_rotation(seed, reflect):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    if (torch.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def test_reprs_show_arguments():
    assert repr(PeriodicKNNGraph(k=12, tie_tol=1e-5)) == 'PeriodicKNNGraph(k=12, tie_tol=1e-05)'
    assert repr(WPDD(k=20, weighting='paper')) == "WPDD(k=20, weighting='paper')"
    assert repr(UPDD(max_atoms=10, on_oversize='skip')) == \
        "UPDD(max_atoms=10, on_oversize='skip')"
    assert repr(PDD(k=30, collapse_tol=1e-3)) == 'PDD(k=30, collapse_tol=0.001)'


def test_graph_contract_dtypes_and_shapes(skewed_cell):
    data = PeriodicKNNGraph(k=16)(skewed_cell)
    num_edges = data.edge_index.shape[1]
    assert data.edge_index.dtype == torch.long
    assert data.edge_dist.shape == (num_edges,)
    assert data.edge_dist.dtype == torch.float32
    assert data.edge_vec.shape == (num_edges, 3)
    assert data.edge_shift.dtype == torch.long
    assert torch.all(torch.bincount(data.edge_index[1]) >= 16)


def test_wpdd_contract(skewed_cell):
    data = WPDD(k=50)(skewed_cell)
    assert data.wpdd.shape == (4, 51)
    assert data.wpdd.dtype == torch.float32
    assert torch.all(data.wpdd[:, 2:] >= data.wpdd[:, 1:-1])


def test_permutation_permutes_rows(skewed_cell, crystal):
    perm = torch.tensor([2, 0, 3, 1])
    permuted = crystal(skewed_cell.pos[perm], skewed_cell.cell, z=skewed_cell.z[perm])
    original = WPDD(k=30)(skewed_cell).wpdd
    assert torch.allclose(WPDD(k=30)(permuted).wpdd, original[perm], atol=1e-5)


@pytest.mark.parametrize('seed, reflect', [(0, False), (1, True), (2, False)])
def test_rigid_motion_invariance(skewed_cell, crystal, seed, reflect):
    rotation = _random_rotation(seed, reflect)
    translation = torch.tensor([0.7, -2.3, 5.1])
    moved = crystal(skewed_cell.pos @ rotation.T + translation, skewed_cell.cell[0] @ rotation.T,
                    z=skewed_cell.z)
    original = WPDD(k=40)(skewed_cell).wpdd
    assert torch.allclose(WPDD(k=40)(moved).wpdd, original, atol=1e-4)


@pytest.mark.parametrize('basis_change', [
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]],
    [[1, 2, 0], [0, 1, 0], [1, 1, 1]],
    [[0, 1, 0], [1, 0, 0], [0, 0, -1]],
])
def test_unimodular_cell_change_invariance(skewed_cell, crystal, basis_change):
    matrix = torch.tensor(basis_change, dtype=torch.float32)
    assert abs(float(torch.linalg.det(matrix))) == 1.0
    other = crystal(skewed_cell.pos, matrix @ skewed_cell.cell[0], z=skewed_cell.z)
    assert torch.allclose(WPDD(k=40)(other).wpdd, WPDD(k=40)(skewed_cell).wpdd, atol=1e-4)


@pytest.mark.parametrize('reps', [(2, 1, 1), (2, 2, 2)])
@pytest.mark.parametrize('weighting', ['mean_normalised', 'mass', 'uniform'])
def test_supercell_keeps_rows(skewed_cell, crystal, reps, weighting):
    big = _supercell(skewed_cell, reps, crystal)
    copies = reps[0] * reps[1] * reps[2]
    small_rows = WPDD(k=30, weighting=weighting)(skewed_cell).wpdd
    big_rows = WPDD(k=30, weighting=weighting)(big).wpdd
    # Atom i of copy c sits at row c * m + i of the supercell.
    for c in range(copies):
        block = big_rows[c * 4:(c + 1) * 4]
        assert torch.allclose(block, small_rows, atol=1e-4)


def test_paper_weighting_changes_with_supercell(skewed_cell, crystal):
    big = _supercell(skewed_cell, (2, 1, 1), crystal)
    small_rows = WPDD(k=30, weighting='paper')(skewed_cell).wpdd
    big_rows = WPDD(k=30, weighting='paper')(big).wpdd
    assert torch.allclose(big_rows[:4, 1:], small_rows[:, 1:], atol=1e-4)
    assert torch.allclose(big_rows[:4, 0], small_rows[:, 0] / 2, atol=1e-7)
    assert not torch.allclose(big_rows[:4, 0], small_rows[:, 0], atol=1e-3)


@pytest.mark.parametrize('eps', [1e-3, 1e-2])
def test_perturbation_bounded_by_two_eps(skewed_cell, crystal, eps):
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(4, 3, generator=generator)
    noise = eps * noise / noise.norm(dim=1, keepdim=True)
    moved = crystal(skewed_cell.pos + noise, skewed_cell.cell, z=skewed_cell.z)
    change = (WPDD(k=50)(moved).wpdd[:, 1:] - WPDD(k=50)(skewed_cell).wpdd[:, 1:]).abs()
    assert float(change.max()) <= 2 * eps + 1e-5


def test_one_atom_cubic_wpdd(crystal):
    a = 3.0
    data = WPDD(k=26)(crystal(torch.zeros(1, 3), torch.eye(3) * a, z=[29]))
    expected = torch.tensor([1.0] * 6 + [math.sqrt(2)] * 12 + [math.sqrt(3)] * 8) * a
    assert torch.allclose(data.wpdd[0, 1:], expected, atol=1e-5)
    assert float(data.wpdd[0, 0]) == 1.0


@pytest.mark.parametrize('weighting, expected', [
    ('mean_normalised', [8 / 12, 16 / 12]),
    ('paper', [8 / 24, 16 / 24]),
    ('uniform', [1.0, 1.0]),
    ('mass', [15.999 / 24.0325, 32.06 / 24.0325]),
])
def test_atom_weights(weighting, expected):
    weights = atom_weights(torch.tensor([8, 16]), weighting)
    assert torch.allclose(weights, torch.tensor(expected), atol=1e-3)


@pytest.mark.parametrize('weighting', ['mean_normalised', 'paper', 'mass', 'uniform'])
def test_wpdd_weight_column_matches_atom_weights(skewed_cell, crystal, weighting):
    one_atom = crystal(torch.zeros(1, 3), torch.eye(3) * 2.0, z=[29])
    transformed = transform_batch(WPDD(k=10, weighting=weighting), [skewed_cell, one_atom])
    for data, original in zip(transformed, [skewed_cell, one_atom]):
        expected = atom_weights(original.z, weighting)
        assert torch.allclose(data.wpdd[:, 0], expected, atol=1e-7)


def test_updd_matches_brute_force(skewed_cell, brute_force):
    data = UPDD()(skewed_cell)
    dist, j, _ = brute_force(skewed_cell.pos, skewed_cell.cell, reach=10)
    assert data.updd_index.shape == (2, 12)
    for (neighbor, centre), weight in zip(data.updd_index.T.tolist(), data.updd_weight):
        expected = 1.0 / dist[centre, j == neighbor].min()
        assert math.isclose(float(weight), float(expected), rel_tol=1e-5)


def test_updd_differs_from_rounded_fractions(skewed_cell):
    # Rounding fractional differences, a common shortcut, overestimates d_min in this
    # sheared cell. The exact minimum must be smaller for at least one pair.
    cell = skewed_cell.cell[0].double()
    frac = torch.linalg.solve(cell.T, skewed_cell.pos.double().T).T
    diff = frac.unsqueeze(0) - frac.unsqueeze(1)
    rounded = ((diff - diff.round()) @ cell).norm(dim=-1)
    data = UPDD()(skewed_cell)
    exact = 1.0 / data.updd_weight.double()
    approx = rounded[data.updd_index[1], data.updd_index[0]]
    assert bool((exact < approx - 1e-3).any())
    assert bool((exact <= approx + 1e-5).all())


def test_updd_size_cap(skewed_cell):
    with pytest.raises(ValueError, match='max_atoms=3'):
        UPDD(max_atoms=3)(skewed_cell)
    with pytest.warns(UserWarning, match='empty UPDD'):
        data = UPDD(max_atoms=3, on_oversize='skip')(skewed_cell)
    assert data.updd_index.shape == (2, 0)
    assert data.updd_weight.shape == (0,)


def test_updd_index_increments_when_batched(skewed_cell):
    transform = T.Compose([PeriodicKNNGraph(k=8), UPDD()])
    batch = next(iter(DataLoader([transform(skewed_cell), transform(skewed_cell)],
                                 batch_size=2)))
    assert int(batch.updd_index.max()) == 7
    assert int(batch.edge_index.max()) == 7
    assert batch.updd_index.shape == (2, 24)


def test_pdd_collapses_equivalent_atoms(crystal):
    a = 5.6
    # NaCl conventional cell: all 8 atoms have the same distance rows (PDD ignores types).
    frac = torch.tensor([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5],
                         [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])
    data = crystal(frac * a, torch.eye(3) * a, z=[11] * 4 + [17] * 4)
    table = pdd(data, k=20)
    assert table.shape == (1, 21)
    assert float(table[0, 0]) == 1.0
    assert math.isclose(float(table[0, 1]), a / 2, rel_tol=1e-6)


def test_pdd_weights_and_order(skewed_cell):
    table = PDD(k=25)(skewed_cell).pdd
    assert table.shape == (4, 26)
    assert math.isclose(float(table[:, 0].sum()), 1.0, rel_tol=1e-6)
    assert torch.all(table[1:, 1] >= table[:-1, 1])


def test_collapse_rows_tolerance():
    rows = torch.tensor([[1.0, 2.0], [1.00005, 2.00005], [1.0, 2.5], [1.0003, 2.0]])
    table = collapse_rows(rows, collapse_tol=1e-4)
    assert table.shape == (3, 3)
    assert torch.allclose(table[:, 0], torch.tensor([0.5, 0.25, 0.25]))
    assert torch.allclose(collapse_rows(rows, collapse_tol=1e-3)[:, 0],
                          torch.tensor([0.75, 0.25]))


def test_pdd_same_for_supercell_and_distance(skewed_cell, crystal):
    big = _supercell(skewed_cell, (2, 2, 1), crystal)
    small_table, big_table = pdd(skewed_cell, k=30), pdd(big, k=30)
    assert small_table.shape == big_table.shape
    assert torch.allclose(small_table, big_table, atol=1e-4)
    assert pdd_distance(small_table, big_table) < 1e-4

    moved = crystal(skewed_cell.pos + torch.tensor([[0.05, 0, 0], [0, 0, 0], [0, 0, 0],
                                                    [0, 0, 0]]), skewed_cell.cell)
    distance = pdd_distance(small_table, pdd(moved, k=30))
    assert 1e-4 < distance <= 0.1 + 1e-5


def test_transform_batch_equals_per_item(skewed_cell, crystal):
    items = [skewed_cell, crystal(torch.zeros(1, 3), torch.eye(3) * 2.0),
             crystal([[0, 0, 0], [1.5, 1.5, 2.0]], torch.diag(torch.tensor([3.0, 3.0, 22.0])))]
    transform = T.Compose([PeriodicKNNGraph(k=16), WPDD(k=50), UPDD(), PDD(k=20)])
    batched = transform_batch(transform, items, chunk_size=2)
    for item, together in zip(items, batched):
        alone = transform(item)
        for key in ('edge_index', 'edge_shift', 'updd_index'):
            assert torch.equal(getattr(together, key), getattr(alone, key))
        for key in ('edge_dist', 'edge_vec', 'wpdd', 'pdd', 'updd_weight'):
            assert torch.allclose(getattr(together, key), getattr(alone, key), atol=1e-6)
    assert not hasattr(items[0], 'wpdd') or items[0].get('wpdd') is None


def test_overlapping_atoms_rejected_by_graph(crystal):
    data = crystal([[0, 0, 0], [0.0001, 0, 0]], torch.eye(3) * 3.0)
    with pytest.raises(ValueError, match='merge_tol'):
        PeriodicKNNGraph(k=4)(data)
    with pytest.raises(ValueError, match='merge_tol'):
        UPDD()(data)


def test_missing_inputs_raise(crystal):
    data = crystal(torch.zeros(1, 3), torch.eye(3))
    del data.cell
    with pytest.raises(ValueError, match='data.cell'):
        WPDD()(data)


@pytest.mark.parametrize('factory, match', [
    (lambda: PeriodicKNNGraph(k=0), 'k must be'),
    (lambda: WPDD(weighting='atomic'), 'weighting'),
    (lambda: WPDD(k=-1), 'k must be'),
    (lambda: UPDD(max_atoms=0), 'max_atoms'),
    (lambda: UPDD(on_oversize='ignore'), 'on_oversize'),
    (lambda: PDD(collapse_tol=-1.0), 'collapse_tol'),
])
def test_bad_options_raise(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_matches_cpu(skewed_cell):
    transform = T.Compose([PeriodicKNNGraph(k=16), WPDD(k=50), UPDD(), PDD(k=20)])
    on_cpu = transform(skewed_cell)
    on_gpu = transform(skewed_cell.to('cuda'))
    for key in ('edge_index', 'edge_shift', 'updd_index'):
        assert torch.equal(getattr(on_gpu, key).cpu(), getattr(on_cpu, key))
    for key in ('edge_dist', 'edge_vec', 'wpdd', 'updd_weight', 'pdd'):
        assert torch.allclose(getattr(on_gpu, key).cpu(), getattr(on_cpu, key), atol=1e-5)
