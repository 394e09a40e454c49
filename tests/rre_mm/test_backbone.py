"""RRENet, RREResNet and the CIFAR net: shapes, equivariance, freezing, loading, registry."""
import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import rre_mm  # noqa: F401  (registers the modules)
from rre_mm.layers import RRECifarNet, deploy
from rre_mm.models import RRENet, RREResNet

ATOL = 1e-9


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """Run on one thread: these tensors are tiny, and two threads on a busy
    machine spend most of their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rotation_gap(model, size, seed=0):
    """Max |f(rot90 x) - rot90 f(x)| over the pooled outputs, relative to max |f(x)|."""
    torch.manual_seed(seed)
    x = torch.randn(1, 3, size, size, dtype=torch.double)
    outputs = model(x)
    rotated_outputs = model(torch.rot90(x, 1, (-2, -1)))
    gaps = []
    for out, rotated in zip(outputs, rotated_outputs):
        gap = (rotated - torch.rot90(out, 1, (-2, -1))).abs().max()
        gaps.append((gap / out.abs().max()).item())
    return gaps


@pytest.mark.parametrize('arch,fields', [('n', [64, 128, 256]), ('s', [128, 256, 512]),
                                         ('m', [192, 384, 576])])
def test_rrenet_output_fields(arch, fields):
    model = RRENet(arch, widen_factor=0.25 if arch == 'm' else 1.0)
    expected = fields if arch != 'm' else [int(f * 0.25) for f in fields]
    assert model.out_channels == expected


def test_rrenet_output_shapes():
    model = RRENet('n', out_indices=(0, 1, 2, 3, 4)).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 96))
    shapes = [tuple(out.shape) for out in outputs]
    assert shapes == [(1, 16, 32, 48), (1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6),
                      (1, 256, 2, 3)]


def test_rrenet_flat_outputs():
    model = RRENet('n', group_order=8, pool_outputs=False, widen_factor=0.25).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 64))
    assert [out.shape[1] for out in outputs] == [16 * 8, 32 * 8, 64 * 8]
    assert model.out_channels == [128, 256, 512]


@pytest.mark.parametrize('size', [65, 129])
def test_rrenet_equivariant_on_odd_sizes(size):
    model = RRENet('n', relaxed=False, widen_factor=0.125).double().train()
    even_gaps = rotation_gap(model, size - 1)
    gaps = rotation_gap(model, size)
    for level, gap in enumerate(gaps):
        assert gap < ATOL, (f'level {level}: relative gap {gap:.3e} at {size}x{size}; '
                            f'at {size - 1}x{size - 1} it is {even_gaps}')


def test_rrenet_even_size_not_exact():
    model = RRENet('n', relaxed=False, widen_factor=0.125).double().train()
    gaps = rotation_gap(model, 64)
    assert max(gaps) > 1e-6, f'relative gaps at 64x64: {gaps}'


def test_rrenet_relaxed_breaks_equivariance_when_biased():
    model = RRENet('n', relaxed=True, widen_factor=0.125).double().train()
    exact = rotation_gap(model, 65)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('g_bias'):
                param.normal_(std=0.1)
    relaxed = rotation_gap(model, 65)
    assert max(exact) < ATOL
    assert min(relaxed) > 1e-4


@pytest.mark.parametrize('depth', [18, 50])
def test_rre_resnet_equivariant_on_odd_size(depth):
    model = RREResNet(depth, base_channels=4, relaxed=False, norm_eval=False).double()
    gaps = rotation_gap(model.train(), 33)
    assert len(gaps) == 4
    for level, gap in enumerate(gaps):
        assert gap < ATOL, f'level {level}: relative gap {gap:.3e}'


def test_rre_resnet_shapes_and_fields():
    model = RREResNet(18, base_channels=16).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 64))
    assert [tuple(out.shape) for out in outputs] == [
        (1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 128, 2, 2)]
    assert RREResNet(50, base_channels=16).out_channels == [64, 128, 256, 512]


@pytest.mark.parametrize('depth,low,high', [(18, 10.0e6, 11.5e6), (34, 18e6, 22e6),
                                            (50, 19e6, 24e6)])
def test_rre_resnet_default_size_near_resnet(depth, low, high):
    count = sum(p.numel() for p in RREResNet(depth).parameters())
    assert low < count < high


@pytest.mark.parametrize('cls,frozen,names', [
    (RRENet, 2, ['stem', 'stage1', 'stage2']),
    (RREResNet, 1, ['stem', 'layer1']),
])
def test_frozen_stages_stay_frozen(cls, frozen, names):
    kwargs = dict(base_channels=8) if cls is RREResNet else dict(widen_factor=0.25)
    model = cls(frozen_stages=frozen, norm_eval=False, **kwargs)
    model.train()
    for name, module in model.named_children():
        is_frozen = name in names
        for param in module.parameters():
            assert param.requires_grad != is_frozen, name
        for norm in module.modules():
            if isinstance(norm, _BatchNorm):
                assert norm.training != is_frozen, name


@pytest.mark.parametrize('cls', [RRENet, RREResNet])
def test_norm_eval_keeps_batch_norm_in_eval(cls):
    kwargs = dict(base_channels=8) if cls is RREResNet else dict(widen_factor=0.25)
    model = cls(norm_eval=True, **kwargs).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms
    assert all(not norm.training for norm in norms)
    assert any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('cls', [RRENet, RREResNet])
def test_pretrained_init_cfg_loads_every_key(cls, tmp_path):
    kwargs = dict(base_channels=8) if cls is RREResNet else dict(widen_factor=0.25)
    source = cls(**kwargs)
    with torch.no_grad():
        for param in source.parameters():
            param.normal_()
    checkpoint = {'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}}
    checkpoint['state_dict']['neck.some.weight'] = torch.zeros(3)
    path = tmp_path / 'detector.pth'
    torch.save(checkpoint, path)

    target = cls(init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'),
                 **kwargs)
    target.init_weights()
    loaded = target.state_dict()
    assert list(loaded) == list(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_state_dict_keys_same_in_train_and_eval():
    model = RRENet('n', widen_factor=0.25)
    train_keys = list(model.state_dict())
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 32, 32))
    assert list(model.state_dict()) == train_keys


def test_rrenet_deploy_matches_eval():
    torch.manual_seed(0)
    model = RRENet('n', widen_factor=0.125).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.double)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('g_bias'):
                param.normal_(std=0.1)
        model.train()(x)  # move the running statistics away from 0 and 1
        expected = model.eval()(x)
    deployed = deploy(copy.deepcopy(model))
    with torch.no_grad():
        outputs = deployed(x)
    remaining = [type(m).__name__ for m in deployed.modules()
                 if type(m).__name__.startswith('RRE') and hasattr(m, 'expand_weight')]
    assert remaining == []
    for out, ref in zip(outputs, expected):
        assert torch.allclose(out, ref, atol=1e-10)


def test_build_from_registry_after_import():
    from mmdet.registry import MODELS
    from mmengine.config import Config
    cfg = Config(dict(
        custom_imports=dict(imports=['rre_mm'], allow_failed_imports=False),
        model=dict(type='RRENet', arch='n', widen_factor=0.25, pool_outputs=False)))
    model = MODELS.build(cfg.model)
    assert isinstance(model, RRENet)
    assert MODELS.get('RREPAFPN') is not None
    assert isinstance(MODELS.build(dict(type='RREResNet', depth=18, base_channels=8)),
                      RREResNet)


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='x'), "arch='x'"),
    (dict(group_order=5), 'group_order=5'),
    (dict(out_indices=(5,)), 'out_indices'),
    (dict(frozen_stages=7), 'frozen_stages=7'),
    (dict(widen_factor=0), 'widen_factor=0'),
])
def test_rrenet_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RRENet(**kwargs)


def test_rre_resnet_invalid_depth():
    with pytest.raises(ValueError, match='depth=101'):
        RREResNet(depth=101)


def test_cifar_net_parameter_counts():
    relaxed = sum(p.numel() for p in RRECifarNet('n').parameters())
    strict = sum(p.numel() for p in RRECifarNet('n', relaxed=False).parameters())
    g_biases = sum(p.numel() for name, p in RRECifarNet('n').named_parameters()
                   if name.endswith('g_bias'))
    assert relaxed == 261012
    assert strict == 236244
    assert relaxed - strict == g_biases


def test_cifar_net_rotation_invariant_logits():
    torch.manual_seed(0)
    model = RRECifarNet('n', relaxed=False).double().train()
    x = torch.randn(2, 3, 17, 17, dtype=torch.double)
    logits = model(x)
    rotated = model(torch.rot90(x, 1, (-2, -1)))
    assert logits.shape == (2, 100)
    assert torch.allclose(logits, rotated, atol=1e-10)
