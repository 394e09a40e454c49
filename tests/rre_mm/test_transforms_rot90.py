"""Tests for the Rot90 and RandomRot90 pipeline transforms."""
import copy

import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks

from rre_mm.datasets import RandomRot90, Rot90, rot90_matrix

SHAPES = [(7, 11), (12, 12), (24, 17)]


def make_boxes(height: int, width: int, num: int, seed: int) -> np.ndarray:
    """Random integer boxes (x1, y1, x2, y2) inside a height x width image."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.integers(0, width + 1, size=(num, 2)), axis=1)
    y = np.sort(rng.integers(0, height + 1, size=(num, 2)), axis=1)
    # Keep every box at least one pixel wide so that it renders.
    x[:, 1] = np.maximum(x[:, 1], x[:, 0] + 1)
    y[:, 1] = np.maximum(y[:, 1], y[:, 0] + 1)
    x = np.clip(x, 0, width)
    y = np.clip(y, 0, height)
    x[:, 0] = np.minimum(x[:, 0], x[:, 1] - 1)
    y[:, 0] = np.minimum(y[:, 0], y[:, 1] - 1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]],
                    axis=1).astype(np.float32)


def render(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Render boxes as [N, H, W] uint8 masks; pixel (r, c) covers [c, c+1]."""
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
        masks[i, y1:y2, x1:x2] = 1
    return masks


def mask_extent(mask: np.ndarray) -> np.ndarray:
    """Tight (x1, y1, x2, y2) box of a rendered mask, in pixel-edge units."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1],
                    dtype=np.float32)


def make_results(height: int, width: int, seed: int = 0,
                 box_type: str = 'hbox') -> dict:
    rng = np.random.default_rng(seed)
    boxes = make_boxes(height, width, num=5, seed=seed)
    gt_bboxes = HorizontalBoxes(boxes) if box_type == 'hbox' else boxes
    return dict(
        img=rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8),
        img_shape=(height, width),
        ori_shape=(height, width),
        scale_factor=(1.5, 2.0),
        gt_bboxes=gt_bboxes,
        gt_bboxes_labels=np.arange(5, dtype=np.int64),
        gt_masks=BitmapMasks(render(boxes, height, width), height, width),
    )


def box_array(boxes) -> np.ndarray:
    if isinstance(boxes, HorizontalBoxes):
        return boxes.numpy()
    return np.asarray(boxes)


@pytest.mark.parametrize('box_type', ['hbox', 'ndarray'])
@pytest.mark.parametrize('k', [0, 1, 2, 3])
@pytest.mark.parametrize('shape', SHAPES)
def test_rot90_boxes_match_rendered_masks(shape, k, box_type):
    height, width = shape
    results = make_results(height, width, seed=k, box_type=box_type)
    rendered = render(box_array(results['gt_bboxes']), height, width)

    out = Rot90(k=k)(copy.deepcopy(results))

    rotated_boxes = box_array(out['gt_bboxes'])
    for i, mask in enumerate(rendered):
        expected = mask_extent(np.rot90(mask, k))
        assert np.array_equal(rotated_boxes[i], expected), (
            f'box {i}: got {rotated_boxes[i]}, rendered {expected}')


@pytest.mark.parametrize('k', [0, 1, 2, 3])
@pytest.mark.parametrize('shape', SHAPES)
def test_rot90_image_and_metadata(shape, k):
    height, width = shape
    results = make_results(height, width)
    img = results['img'].copy()

    out = Rot90(k=k)(results)

    assert np.array_equal(out['img'], np.rot90(img, k))
    assert out['img'].flags['C_CONTIGUOUS']
    expected_shape = (width, height) if k % 2 else (height, width)
    assert tuple(out['img_shape']) == expected_shape
    assert tuple(out['ori_shape']) == expected_shape
    expected_scale = (2.0, 1.5) if k % 2 else (1.5, 2.0)
    assert tuple(out['scale_factor']) == expected_scale
    assert out['rot90_k'] == k
    assert np.allclose(out['homography_matrix'],
                       rot90_matrix(k, height, width), atol=0)


@pytest.mark.parametrize('k', [1, 2, 3])
def test_rot90_bitmap_masks_follow_image(k):
    height, width = 9, 14
    results = make_results(height, width, seed=3)
    masks = results['gt_masks'].masks.copy()

    out = Rot90(k=k)(results)

    assert isinstance(out['gt_masks'], BitmapMasks)
    assert (out['gt_masks'].height, out['gt_masks'].width) == \
        tuple(out['img_shape'])
    assert np.array_equal(out['gt_masks'].masks,
                          np.rot90(masks, k, axes=(1, 2)))
    mask_boxes = out['gt_masks'].get_bboxes(HorizontalBoxes).numpy()
    assert np.array_equal(mask_boxes, box_array(out['gt_bboxes']))


@pytest.mark.parametrize('k', [1, 2, 3])
def test_rot90_polygon_masks_follow_boxes(k):
    height, width = 10, 16
    boxes = make_boxes(height, width, num=3, seed=5)
    polygons = [[np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float32)]
                for x1, y1, x2, y2 in boxes]
    results = dict(
        img=np.zeros((height, width, 3), dtype=np.uint8),
        gt_bboxes=HorizontalBoxes(boxes.copy()),
        gt_masks=PolygonMasks(polygons, height, width))

    out = Rot90(k=k)(results)

    assert isinstance(out['gt_masks'], PolygonMasks)
    assert (out['gt_masks'].height, out['gt_masks'].width) == \
        tuple(out['img_shape'])
    polygon_boxes = out['gt_masks'].get_bboxes(HorizontalBoxes).numpy()
    assert np.array_equal(polygon_boxes, box_array(out['gt_bboxes']))


def test_rot90_seg_map_rotates():
    seg = np.arange(6 * 9, dtype=np.uint8).reshape(6, 9)
    results = dict(img=np.zeros((6, 9, 3), np.uint8), gt_seg_map=seg.copy())

    out = Rot90(k=3)(results)

    assert np.array_equal(out['gt_seg_map'], np.rot90(seg, 3))


@pytest.mark.parametrize('shape', SHAPES)
def test_four_quarter_turns_are_identity(shape):
    height, width = shape
    results = make_results(height, width, seed=7)
    original = copy.deepcopy(results)

    out = results
    for _ in range(4):
        out = Rot90(k=1)(out)

    assert np.array_equal(out['img'], original['img'])
    assert tuple(out['img_shape']) == (height, width)
    assert tuple(out['scale_factor']) == tuple(original['scale_factor'])
    assert torch.equal(out['gt_bboxes'].tensor, original['gt_bboxes'].tensor)
    assert np.array_equal(out['gt_masks'].masks, original['gt_masks'].masks)
    assert np.allclose(out['homography_matrix'], np.eye(3), atol=0)
    assert out['rot90_k'] == 0


def test_rot90_then_inverse_is_identity():
    results = make_results(13, 8, seed=11)
    original = copy.deepcopy(results)

    out = Rot90(k=3)(Rot90(k=1)(results))

    assert np.array_equal(out['img'], original['img'])
    assert torch.equal(out['gt_bboxes'].tensor, original['gt_bboxes'].tensor)


def test_rot90_k_is_taken_modulo_four():
    assert Rot90(k=5).k == 1
    assert Rot90(k=-1).k == 3
    assert repr(Rot90(k=6)) == 'Rot90(k=2)'


@pytest.mark.parametrize('bad_k', [1.0, '1', None, True])
def test_rot90_rejects_non_integer_k(bad_k):
    with pytest.raises(TypeError, match='quarter turns'):
        Rot90(k=bad_k)


def test_rot90_rejects_malformed_box_array():
    results = dict(img=np.zeros((4, 4, 3), np.uint8),
                   gt_bboxes=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r'\[N, 4\]'):
        Rot90(k=1)(results)


def test_random_rot90_probability_extremes():
    results = make_results(6, 10, seed=2)

    never = RandomRot90(prob=0.0)(copy.deepcopy(results))
    always = RandomRot90(prob=1.0, k_choices=(2, ))(copy.deepcopy(results))
    fixed = Rot90(k=2)(copy.deepcopy(results))

    assert never['rot90_k'] == 0
    assert np.array_equal(never['img'], results['img'])
    assert always['rot90_k'] == 2
    assert np.array_equal(always['img'], fixed['img'])
    assert torch.equal(always['gt_bboxes'].tensor, fixed['gt_bboxes'].tensor)


def test_random_rot90_draws_every_choice():
    np.random.seed(0)
    transform = RandomRot90(prob=1.0, k_choices=(1, 2, 3))
    drawn = {transform(dict(img=np.zeros((3, 5, 3), np.uint8)))['rot90_k']
             for _ in range(60)}
    assert drawn == {1, 2, 3}


@pytest.mark.parametrize('kwargs, error', [
    (dict(prob=1.5), ValueError),
    (dict(prob=-0.1), ValueError),
    (dict(k_choices=()), ValueError),
    (dict(k_choices=(1, 2.0)), TypeError),
])
def test_random_rot90_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        RandomRot90(**kwargs)


def test_rot90_inside_mmdet_test_pipeline(bccd_root):
    """A BCCD val image through the rotated test pipeline of the configs."""
    from mmdet.datasets import VOCDataset

    classes = ('RBC', 'WBC', 'Platelets')
    upright_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(320, 240), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_shape', 'ori_shape', 'scale_factor')),
    ]
    rotated_pipeline = copy.deepcopy(upright_pipeline)
    rotated_pipeline.insert(1, dict(type='Rot90', k=1))
    rotated_pipeline[-1]['meta_keys'] += ('rot90_k', )

    def first_sample(pipeline):
        dataset = VOCDataset(
            data_root=str(bccd_root) + '/',
            ann_file='ImageSets/Main/val.txt',
            data_prefix=dict(sub_data_root=''),
            metainfo=dict(classes=classes),
            test_mode=True,
            indices=1,
            pipeline=pipeline)
        return dataset[0]

    upright = first_sample(upright_pipeline)
    rotated = first_sample(rotated_pipeline)

    upright_meta = upright['data_samples'].metainfo
    rotated_meta = rotated['data_samples'].metainfo
    assert tuple(upright['inputs'].shape) == (3, 240, 320)
    assert tuple(rotated['inputs'].shape) == (3, 320, 240)
    assert rotated_meta['ori_shape'] == (640, 480)
    assert rotated_meta['rot90_k'] == 1
    assert torch.equal(rotated['inputs'],
                       torch.rot90(upright['inputs'], 1, dims=(1, 2)))

    # Ground truth stays in the original scale; it turns with the image.
    upright_boxes = upright['data_samples'].gt_instances.bboxes.tensor
    rotated_boxes = rotated['data_samples'].gt_instances.bboxes.tensor
    width = upright_meta['ori_shape'][1]
    expected = torch.stack([
        upright_boxes[:, 1], width - upright_boxes[:, 2],
        upright_boxes[:, 3], width - upright_boxes[:, 0]
    ], dim=1)
    assert torch.allclose(rotated_boxes, expected, atol=0)


def test_random_rot90_builds_from_registry():
    pipeline = Compose([
        dict(type='RandomRot90', prob=1.0, k_choices=(1, )),
        dict(type='PackDetInputs'),
    ])
    results = make_results(6, 10, seed=4)
    results['gt_ignore_flags'] = np.zeros(5, dtype=bool)
    packed = pipeline(results)
    assert tuple(packed['inputs'].shape) == (3, 10, 6)
    assert packed['data_samples'].gt_instances.bboxes.shape == (5, 4)
