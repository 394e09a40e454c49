"""RREPAFPN: shapes, equivariance of backbone + neck, deployment, use with MMDetection heads."""
import copy

import pytest
import torch

import rre_mm  # noqa: F401  (registers the modules)
from rre_mm.layers import deploy
from rre_mm.models import RRENet, RREPAFPN

ATOL = 1e-9


@pytest.fixture(autouse=True, scope='module')
def single_thread():
    """Run on one thread: these tensors are tiny, and two threads on a busy
    machine spend most of their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_pair(relaxed=False, group_order=4, upsample_kernel_size=3):
    backbone = RRENet('n', group_order=group_order, relaxed=relaxed, widen_factor=0.125,
                      pool_outputs=False)
    neck = RREPAFPN(backbone.out_fields[2:], 8, group_order, relaxed,
                    upsample_kernel_size=upsample_kernel_size)
    return backbone, neck


@pytest.mark.parametrize('size,expected', [(64, [8, 4, 2]), (65, [9, 5, 3]), (96, [12, 6, 3])])
def test_neck_output_shapes(size, expected):
    backbone, neck = small_pair()
    with torch.no_grad():
        outputs = neck.eval()(backbone.eval()(torch.rand(1, 3, size, size)))
    assert [tuple(out.shape) for out in outputs] == [(1, 8, s, s) for s in expected]


def test_neck_flat_outputs():
    backbone = RRENet('n', widen_factor=0.125, pool_outputs=False).eval()
    neck = RREPAFPN(backbone.out_fields[2:], 8, pool_outputs=False).eval()
    with torch.no_grad():
        outputs = neck(backbone(torch.rand(1, 3, 64, 64)))
    assert [out.shape[1] for out in outputs] == [32, 32, 32]


@pytest.mark.parametrize('group_order', [4, 8])
@pytest.mark.parametrize('size', [65, 129])
def test_backbone_and_neck_equivariant_on_odd_sizes(group_order, size):
    torch.manual_seed(0)
    backbone, neck = small_pair(group_order=group_order)
    model = torch.nn.Sequential(backbone, neck).double().train()
    x = torch.randn(1, 3, size, size, dtype=torch.double)
    outputs = model(x)
    rotated = model(torch.rot90(x, 1, (-2, -1)))

    x_even = torch.randn(1, 3, size - 1, size - 1, dtype=torch.double)
    even_gaps = [(r - torch.rot90(o, 1, (-2, -1))).abs().max().item()
                 for o, r in zip(model(x_even), model(torch.rot90(x_even, 1, (-2, -1))))]
    for level, (out, rot) in enumerate(zip(outputs, rotated)):
        gap = (rot - torch.rot90(out, 1, (-2, -1))).abs().max() / out.abs().max()
        assert gap < ATOL, (f'level {level}: relative gap {gap:.3e} at {size}; absolute '
                            f'gaps at {size - 1}: {even_gaps}')


def test_two_by_two_upsampler_not_exact():
    torch.manual_seed(0)
    backbone, neck = small_pair(upsample_kernel_size=2)
    model = torch.nn.Sequential(backbone, neck).double().train()
    x = torch.randn(1, 3, 65, 65, dtype=torch.double)
    with pytest.raises(ValueError, match='unreachable'):
        model(x)
    x = torch.randn(1, 3, 64, 64, dtype=torch.double)
    outputs = model(x)
    assert [o.shape[-1] for o in outputs] == [8, 4, 2]


def test_neck_deploy_matches_eval():
    torch.manual_seed(1)
    backbone, neck = small_pair(relaxed=True)
    model = torch.nn.Sequential(backbone, neck).double()
    x = torch.rand(2, 3, 65, 65, dtype=torch.double)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('g_bias'):
                param.normal_(std=0.1)
        model.train()(x)
        expected = model.eval()(x)
        outputs = deploy(copy.deepcopy(model))(x)
    for out, ref in zip(outputs, expected):
        assert torch.allclose(out, ref, atol=1e-10)


def test_neck_rejects_pooled_features():
    backbone = RRENet('n', widen_factor=0.125, pool_outputs=True).eval()
    neck = RREPAFPN(backbone.out_fields[2:], 8).eval()
    with torch.no_grad():
        features = backbone(torch.rand(1, 3, 64, 64))
        with pytest.raises(ValueError, match='pool_outputs=False'):
            neck(features)
        with pytest.raises(ValueError, match='expects 3 levels'):
            neck(features[:2])


@pytest.mark.parametrize('kwargs,match', [
    (dict(in_channels=[8]), 'at least two levels'),
    (dict(out_channels=0), 'out_channels=0'),
    (dict(upsample_kernel_size=4), 'upsample_kernel_size=4'),
    (dict(group_order=7), 'group_order=7'),
])
def test_neck_invalid_arguments(kwargs, match):
    arguments = dict(in_channels=[8, 16, 32], out_channels=8)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        RREPAFPN(**arguments)


def test_rtmdet_detector_with_rre_backbone_and_neck():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    detector = MODELS.build(dict(
        type='RTMDet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1]),
        backbone=dict(type='RRENet', arch='n', widen_factor=0.125, pool_outputs=False),
        neck=dict(type='RREPAFPN', in_channels=[8, 16, 32], out_channels=16),
        bbox_head=dict(type='RTMDetSepBNHead', num_classes=3, in_channels=16,
                       feat_channels=16, stacked_convs=1,
                       anchor_generator=dict(type='MlvlPointGenerator', offset=0,
                                             strides=[8, 16, 32])),
        train_cfg=None, test_cfg=None)).eval()
    with torch.no_grad():
        scores, boxes = detector(torch.rand(1, 3, 64, 64), mode='tensor')
    assert [tuple(s.shape) for s in scores] == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2)]
    assert [tuple(b.shape) for b in boxes] == [(1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 2, 2)]


def test_pooled_backbone_with_plain_neck():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    backbone = RRENet('n', widen_factor=0.125).eval()
    neck = MODELS.build(dict(type='CSPNeXtPAFPN', in_channels=backbone.out_channels,
                             out_channels=16, num_csp_blocks=1)).eval()
    with torch.no_grad():
        outputs = neck(backbone(torch.rand(1, 3, 64, 64)))
    assert [tuple(out.shape) for out in outputs] == [(1, 16, 8, 8), (1, 16, 4, 4),
                                                     (1, 16, 2, 2)]
