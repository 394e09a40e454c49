"""Equivariance, relaxation error, caching and deployment of the RRE layers."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rre_mm.layers import (GroupBatchNorm, GroupPool, RREConvModule, RREDepthwiseConv,
                           RREDepthwiseTransposedConv, RREFactorizedConv, RREGroupConv,
                           RRELiftingConv, deploy, group_pool, rotation_index)

# (group order, group steps s of the tested rotation, quarter turns of that rotation)
GROUP_CASES = [(2, 1, 2), (4, 1, 1), (6, 3, 2), (8, 2, 1)]
LAYER_TYPES = ['lifting', 'group', 'depthwise', 'factorized', 'transposed']
ATOL = 1e-10


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """Run on one thread: these tensors are tiny, and two threads on a busy
    machine spend most of their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_layer(kind, group_order, kernel_size, relaxed=True):
    if kind == 'lifting':
        return RRELiftingConv(3, 4, kernel_size, group_order, relaxed=relaxed)
    if kind == 'group':
        return RREGroupConv(3, 4, kernel_size, group_order, relaxed=relaxed)
    if kind == 'depthwise':
        return RREDepthwiseConv(3, kernel_size, group_order, relaxed=relaxed)
    if kind == 'factorized':
        return RREFactorizedConv(3, 4, kernel_size, group_order, relaxed=relaxed)
    # Transposed upsampler: kernel 2 (stride 2) or kernel 3 (stride 2, padding 1).
    return RREDepthwiseTransposedConv(3, group_order, kernel_size, stride=2,
                                      relaxed=relaxed)


def rotate_maps(x, quarter_turns):
    return torch.rot90(x, quarter_turns, dims=(-2, -1))


def act_on_group_features(y, group_order, steps, quarter_turns):
    """L_s: roll the group axis of [B, C * n, H, W] by ``steps`` and rotate the maps."""
    batch, channels, height, width = y.shape
    grouped = y.reshape(batch, channels // group_order, group_order, height, width)
    rolled = torch.roll(grouped, steps, dims=2)
    return rotate_maps(rolled, quarter_turns).reshape(batch, channels, *rotate_maps(
        y, quarter_turns).shape[-2:])


def act_on_input(layer, x, group_order, steps, quarter_turns):
    if isinstance(layer, RRELiftingConv):
        return rotate_maps(x, quarter_turns)
    return act_on_group_features(x, group_order, steps, quarter_turns)


def relaxation_error(layer, x, delta, quarter_turns, group_order, steps):
    """Closed-form f(L_s x) - L_s f(x) for G-Bias differences ``delta``."""
    k = layer.kernel_size if hasattr(layer, 'kernel_size') else layer.depthwise.kernel_size
    if isinstance(layer, RRELiftingConv):
        weight = delta.reshape(-1, 1, k, k).expand(-1, x.shape[1], k, k)
        out = F.conv2d(x, weight, padding=layer.padding)
    elif isinstance(layer, RREGroupConv):
        weight = delta.reshape(-1, 1, k, k).expand(-1, x.shape[1], k, k)
        out = F.conv2d(x, weight, padding=layer.padding)
    else:
        depthwise = layer.depthwise if isinstance(layer, RREFactorizedConv) else layer
        z = layer.pointwise(x) if isinstance(layer, RREFactorizedConv) else x
        batch, channels, height, width = z.shape
        shifted = torch.roll(z.reshape(batch, -1, group_order, height, width), steps,
                             dims=2).reshape(z.shape)
        weight = delta.reshape(-1, 1, k, k)
        if depthwise.transposed:
            out = F.conv_transpose2d(shifted, weight, stride=depthwise.stride,
                                     padding=depthwise.padding, groups=channels)
        else:
            out = F.conv2d(shifted, weight, padding=depthwise.padding, groups=channels)
    return rotate_maps(out, quarter_turns)


def g_bias_of(layer):
    return layer.depthwise.g_bias if isinstance(layer, RREFactorizedConv) else layer.g_bias


def equivariance_gap(layer, x, group_order, steps, quarter_turns):
    rotated_out = layer(act_on_input(layer, x, group_order, steps, quarter_turns))
    return rotated_out - act_on_group_features(layer(x), group_order, steps, quarter_turns)


@pytest.mark.parametrize('kind', LAYER_TYPES)
@pytest.mark.parametrize('group_order,steps,quarter_turns', GROUP_CASES)
@pytest.mark.parametrize('kernel_size', [1, 3, 5])
@pytest.mark.parametrize('size', [(9, 9), (8, 10)])
def test_layer_exactly_equivariant(kind, group_order, steps, quarter_turns, kernel_size, size):
    if kind == 'transposed' and kernel_size != 3:
        kernel_size = 2
    torch.manual_seed(0)
    layer = make_layer(kind, group_order, kernel_size).double()
    x = torch.randn(2, layer.in_channels, *size, dtype=torch.double)
    gap = equivariance_gap(layer, x, group_order, steps, quarter_turns)
    assert torch.allclose(gap, torch.zeros_like(gap), atol=ATOL), gap.abs().max()


@pytest.mark.parametrize('kind', LAYER_TYPES)
@pytest.mark.parametrize('group_order,steps,quarter_turns', GROUP_CASES)
def test_relaxation_error_closed_form(kind, group_order, steps, quarter_turns):
    torch.manual_seed(1)
    kernel_size = 2 if kind == 'transposed' else 3
    layer = make_layer(kind, group_order, kernel_size).double()
    g_bias = g_bias_of(layer)
    with torch.no_grad():
        g_bias.normal_()
    x = torch.randn(2, layer.in_channels, 7, 7, dtype=torch.double)

    gap = equivariance_gap(layer, x, group_order, steps, quarter_turns)
    bias = g_bias.detach()
    delta = (rotate_maps(bias, -quarter_turns)
             - torch.roll(bias, steps, dims=1))
    expected = relaxation_error(layer, x, delta, quarter_turns, group_order, steps)
    assert gap.abs().max() > 1e-3
    assert torch.allclose(gap, expected, atol=ATOL), (gap - expected).abs().max()

    with torch.no_grad():
        g_bias.mul_(2)
    doubled = equivariance_gap(layer, x, group_order, steps, quarter_turns)
    assert torch.allclose(doubled, 2 * gap, atol=ATOL)


@pytest.mark.parametrize('kind', LAYER_TYPES)
def test_strict_layer_has_no_g_bias(kind):
    layer = make_layer(kind, 4, 2 if kind == 'transposed' else 3, relaxed=False)
    assert g_bias_of(layer) is None
    assert not any('g_bias' in key for key in layer.state_dict())


@pytest.mark.parametrize('kind', LAYER_TYPES)
@pytest.mark.parametrize('group_order', [4, 8])
def test_cached_and_plain_match_training(kind, group_order):
    torch.manual_seed(2)
    layer = make_layer(kind, group_order, 2 if kind == 'transposed' else 3).double()
    with torch.no_grad():
        g_bias_of(layer).normal_()
    x = torch.randn(2, layer.in_channels, 9, 9, dtype=torch.double)
    train_keys = list(layer.state_dict())
    expected = layer.train()(x)

    layer.eval()
    with torch.no_grad():
        cached = layer(x)
        cached_again = layer(x)
    plain = layer.to_plain().eval()
    with torch.no_grad():
        plain_out = plain(x)
    assert torch.allclose(cached, expected, atol=ATOL)
    assert torch.allclose(cached_again, expected, atol=ATOL)
    assert torch.allclose(plain_out, expected, atol=ATOL)
    assert list(layer.state_dict()) == train_keys


def test_cache_follows_parameter_updates():
    torch.manual_seed(3)
    layer = RREGroupConv(2, 3, 3, 4).double().eval()
    x = torch.randn(1, 8, 6, 6, dtype=torch.double)
    with torch.no_grad():
        before = layer(x)
        layer.weight.add_(1.0)
        after_inplace = layer(x)
    assert not torch.allclose(before, after_inplace)
    assert torch.allclose(after_inplace, layer.train()(x).detach(), atol=ATOL)

    other = RREGroupConv(2, 3, 3, 4).double()
    layer.eval()
    with torch.no_grad():
        layer(x)
        layer.load_state_dict(other.state_dict())
        loaded = layer(x)
    assert torch.allclose(loaded, other(x), atol=ATOL)


@pytest.mark.parametrize('layer', [
    RRELiftingConv(3, 2, bias=True),
    RREGroupConv(2, 3, 3, 4, bias=True),
    RREDepthwiseConv(2, 3, 4, bias=True),
    RREDepthwiseTransposedConv(2, 4, 2, bias=True),
], ids=['lifting', 'group', 'depthwise', 'transposed'])
def test_bias_is_cached_refreshed_and_deployed(layer):
    layer = layer.double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(1, layer.in_channels, 6, 6, dtype=torch.double)
    expected = layer.train()(x).detach()

    layer.eval()
    with torch.no_grad():
        cached = layer(x)
        layer.bias.add_(1.0)
        shifted = layer(x)
        plain = layer.to_plain()(x)
    assert torch.allclose(cached, expected, atol=ATOL)
    assert torch.allclose(shifted, expected + 1.0, atol=ATOL)
    assert torch.allclose(plain, shifted, atol=ATOL)


def test_cache_dropped_by_train():
    layer = RRELiftingConv(3, 2).eval()
    with torch.no_grad():
        layer(torch.randn(1, 3, 5, 5))
    assert layer._cache is not None
    layer.train()
    assert layer._cache is None


def test_eval_with_grad_enabled_backpropagates():
    layer = RREDepthwiseConv(2, 3, 4).eval()
    layer(torch.randn(1, 8, 5, 5)).sum().backward()
    assert layer.weight.grad is not None
    assert layer.g_bias.grad is not None


def random_batch_norm_stats(module):
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            with torch.no_grad():
                norm.running_mean.normal_()
                norm.running_var.uniform_(0.5, 2.0)
                norm.weight.normal_()
                norm.bias.normal_()


@pytest.mark.parametrize('kind', LAYER_TYPES)
def test_conv_module_deploy_folds_batch_norm(kind):
    torch.manual_seed(4)
    conv = make_layer(kind, 4, 2 if kind == 'transposed' else 3)
    module = RREConvModule(conv, dict(type='BN'), dict(type='SiLU')).double()
    random_batch_norm_stats(module)
    x = torch.randn(2, conv.in_channels, 9, 9, dtype=torch.double)
    module.train()
    module.norm.eval()
    expected = module(x).detach()

    deployed = deploy(copy.deepcopy(module))
    with torch.no_grad():
        out = deployed(x)
    rre_layers = [m for m in deployed.modules()
                  if type(m).__module__.startswith('rre_mm.layers.')
                  and not isinstance(m, (RREConvModule, nn.Sequential))
                  and type(m).__name__ != 'PlainFactorizedConv']
    assert torch.allclose(out, expected, atol=ATOL)
    assert rre_layers == []
    assert deployed.norm is None


def test_group_batch_norm_shares_statistics_over_group():
    torch.manual_seed(5)
    norm = GroupBatchNorm(3, 4).double().train()
    x = torch.randn(4, 12, 5, 5, dtype=torch.double) * 3 + 1
    out = norm(x).reshape(4, 3, 4 * 25).transpose(0, 1).reshape(3, -1)
    assert torch.allclose(out.mean(1), torch.zeros(3, dtype=torch.double), atol=1e-10)
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(3, dtype=torch.double),
                          atol=1e-3)


def test_group_batch_norm_plain_matches_eval():
    torch.manual_seed(6)
    norm = GroupBatchNorm(3, 4).double()
    random_batch_norm_stats(norm)
    norm.eval()
    x = torch.randn(2, 12, 5, 5, dtype=torch.double)
    assert torch.allclose(norm.to_plain()(x), norm(x), atol=ATOL)


def test_sync_batch_norm_conversion_round_trip():
    from mmengine.model import revert_sync_batchnorm
    torch.manual_seed(7)
    module = RREConvModule(RREFactorizedConv(2, 3, 3, 4), dict(type='BN'), None).double()
    random_batch_norm_stats(module)
    x = torch.randn(2, 8, 9, 9, dtype=torch.double)
    module.eval()
    with torch.no_grad():
        expected = module(x)

    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(module))
    assert isinstance(synced.norm.bn, nn.SyncBatchNorm)
    with torch.no_grad():
        synced_out = synced.eval()(x)
    assert torch.allclose(synced_out, expected, atol=ATOL)

    reverted = revert_sync_batchnorm(synced)
    assert not isinstance(reverted.norm.bn, nn.SyncBatchNorm)
    with torch.no_grad():
        reverted_out = reverted.eval()(x)
    train_out = reverted.train()(x)
    assert torch.allclose(reverted_out, expected, atol=ATOL)
    assert train_out.shape == expected.shape


@pytest.mark.parametrize('mode', ['max', 'mean'])
def test_group_pool_invariant_to_group_shift(mode):
    torch.manual_seed(8)
    x = torch.randn(2, 12, 5, 5, dtype=torch.double)
    pooled = group_pool(x, 4, mode)
    rotated = group_pool(act_on_group_features(x, 4, 1, 1), 4, mode)
    assert pooled.shape == (2, 3, 5, 5)
    assert torch.allclose(rotated, rotate_maps(pooled, 1), atol=ATOL)
    assert torch.allclose(GroupPool(3, 4, mode)(x), pooled)


@pytest.mark.parametrize('group_order', [2, 4, 6, 8])
@pytest.mark.parametrize('kernel_size', [1, 2, 3, 5, 7])
def test_rotation_index_is_permutation(group_order, kernel_size):
    index = rotation_index(group_order, kernel_size)
    expected = torch.arange(kernel_size ** 2)
    assert index.shape == (group_order, kernel_size ** 2)
    for row in index:
        assert torch.equal(row.sort().values, expected)
    assert torch.equal(index[0], expected)


@pytest.mark.parametrize('kernel_size', [3, 5, 7])
def test_rotation_index_composes_like_rotations(kernel_size):
    grid = torch.arange(kernel_size ** 2).view(kernel_size, kernel_size)
    quarter = torch.rot90(grid, 1, (0, 1)).reshape(-1)
    half = torch.rot90(grid, 2, (0, 1)).reshape(-1)
    c8 = rotation_index(8, kernel_size)
    c6 = rotation_index(6, kernel_size)
    assert torch.equal(c8[2], quarter)
    assert torch.equal(c8[1][c8[1]], quarter)
    for r in range(8):
        assert torch.equal(c8[(r + 2) % 8], c8[r][quarter])
    for r in range(6):
        assert torch.equal(c6[(r + 3) % 6], c6[r][half])


@pytest.mark.parametrize('kwargs,match', [
    (dict(group_order=3), 'group_order=3'),
    (dict(group_order=16), 'group_order=16'),
    (dict(kernel_size=0), 'kernel_size=0'),
    (dict(stride=0), 'stride=0'),
    (dict(padding=-1), 'padding=-1'),
])
def test_invalid_arguments_raise(kwargs, match):
    arguments = dict(in_fields=2, out_fields=3, kernel_size=3, group_order=4)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RREGroupConv(**arguments)


def test_wrong_input_shape_raises():
    layer = RREGroupConv(2, 3, 3, 4)
    with pytest.raises(ValueError, match='4-D'):
        layer(torch.randn(8, 5, 5))
    with pytest.raises(ValueError, match='group-pooled'):
        layer(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match='expects 8 input channels'):
        layer(torch.randn(1, 7, 5, 5))
    with pytest.raises(ValueError, match='multiple of group_order'):
        group_pool(torch.randn(1, 7, 5, 5), 4)
    with pytest.raises(ValueError, match="mode='sum'"):
        group_pool(torch.randn(1, 8, 5, 5), 4, 'sum')


def test_invalid_configs_raise():
    with pytest.raises(ValueError, match="'LN'"):
        GroupBatchNorm(2, 4, dict(type='LN'))
    with pytest.raises(ValueError, match='NoSuchAct'):
        RREConvModule(RREGroupConv(2, 2), dict(type='BN'), dict(type='NoSuchAct'))
    transposed = RREDepthwiseTransposedConv(2, 4, 3)
    with pytest.raises(ValueError, match='unreachable'):
        transposed(torch.randn(1, 8, 4, 4), output_size=(12, 12))
