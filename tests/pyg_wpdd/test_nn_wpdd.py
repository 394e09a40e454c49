import math

import pytest
import torch
from torch_geometric.data import Batch

from pyg_wpdd.nn import (CGCNN, AtomEmbedding, GatedPDDLayer, GaussianRBF,
                         SymmetricAttentionConv, UPDDMixing, WPDDFormer)
from wpdd_graph_helpers import K_WPDD, add_updd, build_graph, random_crystal, random_graph

ATOL = 1e-5


def make_model(name: str, **kwargs):
    torch.manual_seed(0)
    if name == 'wpddformer':
        kwargs.setdefault('channels', 32)
        return WPDDFormer(wpdd_dim=K_WPDD + 1, **kwargs)
    return CGCNN(channels=16, hidden_channels=24, **kwargs)


def warm_up(model, graphs):
    """Fills the batch-norm running statistics with one training pass, then sets eval mode."""
    model.train()
    with torch.no_grad():
        model(Batch.from_data_list(graphs))
    return model.eval()


def rotation_matrix(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    return q


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
@pytest.mark.parametrize('out_channels', [1, 3])
def test_output_shape(name, out_channels):
    model = make_model(name, out_channels=out_channels)
    batch = Batch.from_data_list([random_graph(n, seed=n) for n in (2, 3, 5)])

    out = model(batch)

    assert out.shape == (3, out_channels)
    assert torch.isfinite(out).all()


def test_wpddformer_default_size():
    model = WPDDFormer()
    num_params = sum(p.numel() for p in model.parameters())

    assert model.channels == 256
    assert len(model.convs) == 3
    assert len(model.pdd_layers) == 2
    assert model.rbf.num_gaussians == 256
    assert 3_000_000 < num_params < 5_000_000


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_atom_permutation(name):
    graphs = [random_graph(5, seed=s) for s in range(3)]
    model = warm_up(make_model(name), graphs)
    pos, cell, z = random_crystal(5, seed=11)
    perm = torch.tensor([3, 0, 4, 1, 2])

    data = build_graph(pos, cell, z)
    permuted = build_graph(pos[perm], cell, z[perm])
    with torch.no_grad():
        out, emb = model(data), model.embed(data)
        out_perm, emb_perm = model(permuted), model.embed(permuted)

    assert torch.allclose(out, out_perm, atol=ATOL)
    assert torch.allclose(emb[perm], emb_perm, atol=ATOL)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
@pytest.mark.parametrize('seed', [1, 2])
def test_rotation_translation_reflection(name, seed):
    graphs = [random_graph(4, seed=s) for s in range(3)]
    model = warm_up(make_model(name), graphs)
    pos, cell, z = random_crystal(4, seed=20 + seed)
    rot = rotation_matrix(seed)
    reflect = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    shift = torch.tensor([0.3, -1.7, 2.2], dtype=torch.float64)

    with torch.no_grad():
        out = model(build_graph(pos, cell, z))
        out_rot = model(build_graph(pos @ rot.T + shift, cell @ rot.T, z))
        out_ref = model(build_graph(pos @ reflect, cell @ reflect, z))

    assert torch.allclose(out, out_rot, atol=1e-4)
    assert torch.allclose(out, out_ref, atol=1e-4)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_supercell_invariance(name):
    graphs = [random_graph(4, seed=s) for s in range(3)]
    model = warm_up(make_model(name), graphs)
    pos, cell, z = random_crystal(4, seed=5)
    super_cell = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)) @ cell
    super_pos = torch.cat([pos, pos + cell[0]])
    super_z = torch.cat([z, z])

    data = build_graph(pos, cell, z)
    supercell = build_graph(super_pos, super_cell, super_z)
    with torch.no_grad():
        out = model(data)
        out_super = model(supercell)
        emb_super = model.embed(supercell)

    assert torch.allclose(data.wpdd, supercell.wpdd[:4], atol=ATOL)
    assert torch.allclose(out, out_super, atol=1e-4)
    assert torch.allclose(emb_super[:4], emb_super[4:], atol=1e-4)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_batched_equals_single(name):
    graphs = [random_graph(n, seed=n) for n in (1, 3, 4, 6)]
    model = warm_up(make_model(name), graphs)

    with torch.no_grad():
        batched = model(Batch.from_data_list(graphs))
        single = torch.cat([model(g) for g in graphs])

    assert torch.allclose(batched, single, atol=ATOL)


@pytest.mark.parametrize('name,kwargs', [
    ('wpddformer', {}),
    ('wpddformer', {'use_updd': True, 'heads': 2}),
    ('wpddformer', {'node_features': 'embedding'}),
    ('cgcnn', {}),
])
def test_gradient_reaches_every_parameter(name, kwargs):
    model = make_model(name, **kwargs).train()
    graphs = [add_updd(random_graph(n, seed=n)) for n in (3, 4)]

    loss = model(Batch.from_data_list(graphs)).square().sum()
    loss.backward()

    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert param.grad.abs().sum() > 0, param_name


def test_updd_changes_output():
    graphs = [add_updd(random_graph(4, seed=s)) for s in range(3)]
    model = warm_up(make_model('wpddformer', use_updd=True), graphs)
    batch = Batch.from_data_list(graphs)

    with torch.no_grad():
        out = model(batch)
        batch.updd_weight = batch.updd_weight * torch.linspace(0.5, 2.0, batch.updd_weight.numel())
        out_scaled = model(batch)

    assert not torch.allclose(out, out_scaled, atol=1e-6)


def test_updd_batched_equals_single():
    graphs = [add_updd(random_graph(n, seed=n)) for n in (2, 3, 5)]
    model = warm_up(make_model('wpddformer', use_updd=True), graphs)

    with torch.no_grad():
        batched = model(Batch.from_data_list(graphs))
        single = torch.cat([model(g) for g in graphs])

    assert torch.allclose(batched, single, atol=ATOL)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_reset_parameters(name):
    model = make_model(name)
    warm_up(model, [random_graph(4, seed=s) for s in range(2)])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(10.0)

    model.reset_parameters()

    for param_name, param in model.named_parameters():
        # Linear layers start within 1/sqrt(fan_in) and norms at weight 1, bias 0.
        assert float(param.detach().abs().max()) <= 1.0, param_name
    for buffer_name, buffer in model.named_buffers():
        if buffer_name.endswith('running_mean'):
            assert float(buffer.abs().max()) == 0.0, buffer_name


def test_missing_attribute_error():
    model = make_model('wpddformer')
    data = random_graph(3, seed=0)
    del data.wpdd

    with pytest.raises(ValueError, match="'wpdd'"):
        model(data)


def test_missing_updd_error():
    model = make_model('wpddformer', use_updd=True)

    with pytest.raises(ValueError, match='UPDD'):
        model(random_graph(3, seed=0))


def test_wrong_wpdd_width_error():
    model = make_model('wpddformer')
    data = random_graph(3, seed=0, k_wpdd=K_WPDD + 2)

    with pytest.raises(ValueError, match='wpdd_dim'):
        model(data)


@pytest.mark.parametrize('kwargs', [{'channels': 0}, {'num_layers': 0}, {'heads': 1.5}])
def test_invalid_size_error(kwargs):
    with pytest.raises(ValueError, match='positive integer'):
        WPDDFormer(**kwargs)


def test_unknown_node_feature_mode_error():
    with pytest.raises(ValueError, match='embedding'):
        WPDDFormer(node_features='onehot')


@pytest.mark.parametrize('z', [[0, 6], [6, 101]])
def test_atomic_number_out_of_range_error(z):
    embedding = AtomEmbedding(8)

    with pytest.raises(ValueError, match=r'\[1, 100\]'):
        embedding(torch.tensor(z))


def test_atom_table_missing_element_error(tmp_path):
    table = tmp_path / 'table.json'
    table.write_text('{"1": [0.0, 1.0], "8": [1.0, 0.0]}')
    embedding = AtomEmbedding(4, table_path=table)

    assert embedding(torch.tensor([1, 8])).shape == (2, 4)
    with pytest.raises(ValueError, match=r'\[6\]'):
        embedding(torch.tensor([1, 6]))


def test_atom_table_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.json'):
        AtomEmbedding(4, table_path=tmp_path / 'missing.json')


def test_cgcnn_table_rows():
    embedding = AtomEmbedding(4)

    assert embedding.table.shape == (101, 92)
    assert bool(embedding.known[1:].all())
    assert not bool(embedding.known[0])
    # The CGCNN table is one-hot encoded: only zeros and ones.
    assert bool(((embedding.table == 0) | (embedding.table == 1)).all())
    assert float(embedding.table[1:].sum(dim=-1).min()) >= 1.0


@pytest.mark.parametrize('inverse,start,stop', [(True, -6.0, 0.0), (False, 0.0, 8.0)])
def test_rbf_peak_at_centre(inverse, start, stop):
    rbf = GaussianRBF(start, stop, num_gaussians=25, inverse=inverse)
    centre = rbf.centres[10]
    dist = -1.0 / centre if inverse else centre

    out = rbf(dist.view(1))

    assert out.shape == (1, 25)
    assert int(out.argmax()) == 10
    assert math.isclose(float(out[0, 10]), 1.0, abs_tol=1e-5)
    assert math.isclose(float(out[0, 11]), math.exp(-0.5), abs_tol=1e-5)


def test_rbf_zero_distance_is_finite():
    out = GaussianRBF()(torch.tensor([0.0, 2.0]))

    assert torch.isfinite(out).all()
    assert float(out[0].sum()) == 0.0


@pytest.mark.parametrize('kwargs', [{'num_gaussians': 1}, {'start': 1.0, 'stop': 0.0}])
def test_rbf_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        GaussianRBF(**kwargs)


def test_attention_symmetric_weights():
    torch.manual_seed(0)
    conv = SymmetricAttentionConv(8).eval()
    x = torch.randn(2, 8)
    edge_attr = torch.randn(1, 8)
    query, key = conv.lin_query(x), conv.lin_key(x)

    def alpha(i, j):
        key_i = conv.key_mlp(torch.cat([key[i:i + 1], edge_attr], dim=-1))
        key_j = conv.key_mlp(torch.cat([key[j:j + 1], edge_attr], dim=-1))
        return query[i] * key_j + query[j] * key_i

    assert torch.allclose(alpha(0, 1), alpha(1, 0), atol=1e-6)


def test_pdd_layer_carries_sum():
    torch.manual_seed(0)
    layer = GatedPDDLayer(6).eval()
    h, p = torch.randn(5, 6), torch.randn(5, 6)

    h_new, p_new = layer(h, p)

    assert torch.allclose(p_new, p + h, atol=1e-6)
    assert h_new.shape == (5, 6)


def test_updd_mixing_is_weighted_mean():
    mixing = UPDDMixing(2)
    with torch.no_grad():
        mixing.lin.weight.copy_(torch.eye(2))
        mixing.lin.bias.zero_()
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    # Row 0 mixes atoms 1 and 2 with weights 1 and 3.
    updd_index = torch.tensor([[1, 2], [0, 0]])
    updd_weight = torch.tensor([1.0, 3.0])

    out = mixing(h, updd_index, updd_weight)

    expected_row0 = h[0] + (1.0 * h[1] + 3.0 * h[2]) / 4.0
    assert torch.allclose(out[0], expected_row0, atol=1e-6)
    assert torch.allclose(out[1], h[1], atol=1e-6)


def transform_crystal(pos, cell, z, weighting='mean_normalised'):
    """Builds the model input with the package's own transforms."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import Compose

    from pyg_wpdd.transforms import WPDD, PeriodicKNNGraph

    data = Data(pos=pos.float(), cell=cell.float().unsqueeze(0), z=z.long(),
                pbc=torch.ones(1, 3, dtype=torch.bool), num_nodes=pos.size(0))
    return Compose([PeriodicKNNGraph(k=8), WPDD(k=K_WPDD, weighting=weighting)])(data)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_package_transforms_match_helper(name):
    graphs = [random_graph(4, seed=s) for s in range(3)]
    model = warm_up(make_model(name), graphs)
    pos, cell, z = random_crystal(4, seed=8)

    with torch.no_grad():
        out_helper = model(build_graph(pos, cell, z))
        out_package = model(transform_crystal(pos, cell, z))

    assert torch.allclose(out_helper, out_package, atol=1e-4)


@pytest.mark.parametrize('repeats', [(2, 1, 1), (1, 2, 2)])
def test_supercell_invariance_package_transforms(repeats):
    graphs = [random_graph(4, seed=s) for s in range(3)]
    model = warm_up(make_model('wpddformer'), graphs)
    pos, cell, z = random_crystal(4, seed=9)
    shifts = torch.cartesian_prod(*[torch.arange(r) for r in repeats]).double()
    super_pos = torch.cat([pos + s @ cell for s in shifts])
    super_cell = torch.diag(torch.tensor(repeats, dtype=torch.float64)) @ cell
    super_z = z.repeat(len(shifts))

    with torch.no_grad():
        out = model(transform_crystal(pos, cell, z))
        out_super = model(transform_crystal(super_pos, super_cell, super_z))

    assert torch.allclose(out, out_super, atol=1e-4)


def test_paper_weighting_not_supercell_invariant():
    graphs = [random_graph(4, seed=s) for s in range(3)]
    model = warm_up(make_model('wpddformer'), graphs)
    pos, cell, z = random_crystal(4, seed=9)
    super_pos = torch.cat([pos, pos + cell[0]])
    super_cell = torch.diag(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64)) @ cell

    with torch.no_grad():
        out = model(transform_crystal(pos, cell, z, weighting='paper'))
        out_super = model(transform_crystal(super_pos, super_cell, torch.cat([z, z]),
                                            weighting='paper'))

    assert not torch.allclose(out, out_super, atol=1e-4)


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_sync_batchnorm_conversion(name):
    model = make_model(name)
    num_norms = sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())

    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    assert num_norms > 0
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules()) == num_norms
