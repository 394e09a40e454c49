r"""Rotate detection samples by exact multiples of 90 degrees.

Rotated evaluation is the direct test of the relaxed rotational equivariance of
Wu et al., `"Relaxed Rotational Equivariance via G-Biases in Vision"
<https://arxiv.org/abs/2408.12454>`_ (AAAI 2025): a detector built from C4
group convolutions should lose little accuracy when every test image is turned
by 90 degrees. These transforms turn the image and everything in its pixel
frame, so that the rest of an MMDetection pipeline receives the sample as if
the image had been rotated before it was loaded.
"""
from typing import List, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import BaseBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks


def rot90_matrix(k: int, height: int, width: int) -> np.ndarray:
    r"""Build the homography that turns pixel coordinates by ``k * 90`` degrees.

    The rotation is counter-clockwise as the image is displayed (the direction of
    :func:`numpy.rot90` on the first two axes). For ``k = 1`` a point
    :math:`(x, y)` of a ``height x width`` image maps to

    .. math::
        (x', y') = (y, W - x),

    in the continuous pixel-edge convention of MMDetection boxes, where the
    pixel in column :math:`c` covers :math:`[c, c + 1]`.

    Args:
        k (int): Number of quarter turns; any integer, taken modulo 4.
        height (int): Image height :math:`H` before the rotation.
        width (int): Image width :math:`W` before the rotation.

    Returns:
        np.ndarray: A ``[3, 3]`` float32 homography.
    """
    k = k % 4
    matrix = np.eye(3, dtype=np.float32)

    # Compose single quarter turns, tracking the frame size after each one.
    h, w = height, width
    for _ in range(k):
        quarter = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]], dtype=np.float32)
        matrix = quarter @ matrix
        h, w = w, h
    return matrix


def _rotate_box_array(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map ``[N, 4]`` (x1, y1, x2, y2) boxes through a quarter-turn homography."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    corners = np.stack([
        np.stack([x1, y1], axis=-1),
        np.stack([x2, y2], axis=-1),
    ], axis=1)
    mapped = corners @ matrix[:2, :2].T + matrix[:2, 2]

    # A quarter turn swaps which corner is the top-left one, so re-sort.
    lows = mapped.min(axis=1)
    highs = mapped.max(axis=1)
    return np.concatenate([lows, highs], axis=1).astype(boxes.dtype)


def _rotate_polygon(polygon: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map a flat ``[x0, y0, x1, y1, ...]`` polygon through a homography."""
    points = polygon.reshape(-1, 2)
    mapped = points @ matrix[:2, :2].T + matrix[:2, 2]
    return mapped.reshape(-1).astype(polygon.dtype)


def _swap_pair(value):
    """Swap the two entries of a ``(w, h)`` or ``(h, w)`` pair, keeping its type."""
    if isinstance(value, np.ndarray):
        return value[::-1].copy()
    return type(value)((value[1], value[0]))


@TRANSFORMS.register_module()
class Rot90(BaseTransform):
    r"""Rotate an image and its annotations by ``k * 90`` degrees.

    The turn is counter-clockwise as the image is displayed, as in
    :func:`numpy.rot90`; see :func:`rot90_matrix` for the coordinate map. The
    rotation is exact: no pixel is interpolated and boxes map corner to corner.

    Required keys: ``img``.

    Modified keys (each only if present): ``img``, ``img_shape``, ``ori_shape``,
    ``pad_shape``, ``scale_factor``, ``instances`` (raw boxes and polygon
    masks), ``gt_bboxes``, ``gt_masks``, ``gt_seg_map``,
    ``homography_matrix``.

    Added keys: ``rot90_k`` (the number of quarter turns applied, accumulated
    over several rotations modulo 4).

    For odd ``k`` the height and width swap, and so do the two entries of
    ``ori_shape`` and ``scale_factor``. The sample then reads as if the stored
    image had been rotated before loading. Raw ``instances`` turn in the frame
    of the stored image, so a test pipeline may keep MMDetection's order
    (``LoadImageFromFile``, ``Rot90``, ``Resize``, ``LoadAnnotations``) and
    evaluate rotated ground truth at the original scale. Predictions rescaled
    by ``scale_factor`` land in the same rotated frame.

    Args:
        k (int): Number of counter-clockwise quarter turns; any integer, taken
            modulo 4. (default: :obj:`1`)
    """

    def __init__(self, k: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(
                f'Rot90 expects an integer number of quarter turns k, got '
                f'{k!r} of type {type(k).__name__}; use e.g. k=1 for 90 degrees.')
        self.k = int(k) % 4

    def transform(self, results: dict) -> dict:
        """Rotate ``results`` in place by ``self.k`` quarter turns and return it."""
        return rotate_results(results, self.k)

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(k={self.k})'


@TRANSFORMS.register_module()
class RandomRot90(BaseTransform):
    r"""Randomly rotate an image and its annotations by a multiple of 90 degrees.

    With probability ``prob``, one ``k`` is drawn uniformly from
    ``k_choices`` and the sample is turned as :class:`Rot90` does. Otherwise
    it passes through unchanged, with ``rot90_k`` set to :obj:`0`. Random draws use
    NumPy's global generator, like MMCV's own random transforms, so
    :class:`mmcv.transforms.utils.avoid_cache_randomness` and the data loader
    seeds of MMEngine apply.

    Args:
        prob (float): Probability of rotating a sample. (default: :obj:`0.5`)
        k_choices (Sequence[int]): Quarter-turn counts to draw from when a
            sample is rotated. (default: :obj:`(1, 2, 3)`)
    """

    def __init__(self,
                 prob: float = 0.5,
                 k_choices: Sequence[int] = (1, 2, 3)) -> None:
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(
                f'RandomRot90 expects prob in [0, 1], got {prob!r}.')
        if len(k_choices) == 0:
            raise ValueError(
                'RandomRot90 needs at least one entry in k_choices, got an '
                'empty sequence; use e.g. k_choices=(1, 2, 3).')
        for k in k_choices:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise TypeError(
                    f'RandomRot90 expects integer quarter-turn counts in '
                    f'k_choices, got {k!r} in {k_choices!r}.')
        self.prob = float(prob)
        self.k_choices: List[int] = [int(k) % 4 for k in k_choices]

    @cache_randomness
    def _draw_k(self) -> int:
        if np.random.rand() >= self.prob:
            return 0
        return self.k_choices[np.random.randint(len(self.k_choices))]

    def transform(self, results: dict) -> dict:
        """Rotate ``results`` in place by a random quarter-turn count."""
        return rotate_results(results, self._draw_k())

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(prob={self.prob}, '
                f'k_choices={tuple(self.k_choices)})')


def rotate_results(results: dict, k: int) -> dict:
    """Rotate an MMDetection pipeline sample in place by ``k`` quarter turns.

    Args:
        results (dict): Pipeline sample with at least ``img``, an
            ``[H, W]`` or ``[H, W, C]`` array.
        k (int): Number of counter-clockwise quarter turns, taken modulo 4.

    Returns:
        dict: The same ``results``, rotated.
    """
    k = k % 4
    img = results['img']
    height, width = img.shape[:2]
    matrix = rot90_matrix(k, height, width)

    # Record the turn even for k = 0, as MMDetection's RandomFlip does.
    results['rot90_k'] = (results.get('rot90_k', 0) + k) % 4
    previous = results.get('homography_matrix')
    results['homography_matrix'] = (
        matrix if previous is None else matrix @ previous)
    if k == 0:
        return results
    odd = k % 2 == 1

    # ascontiguousarray: later transforms and the packer expect a plain buffer.
    results['img'] = np.ascontiguousarray(np.rot90(img, k, axes=(0, 1)))
    results['img_shape'] = results['img'].shape[:2]
    if odd:
        for key in ('ori_shape', 'pad_shape', 'scale_factor'):
            if results.get(key) is not None:
                results[key] = _swap_pair(results[key])

    _rotate_raw_instances(results, k)
    _rotate_boxes(results, matrix)
    _rotate_masks(results, k, matrix, results['img_shape'])
    if results.get('gt_seg_map') is not None:
        results['gt_seg_map'] = np.ascontiguousarray(
            np.rot90(results['gt_seg_map'], k, axes=(0, 1)))
    return results


def _rotate_raw_instances(results: dict, k: int) -> None:
    """Rotate the raw ``instances`` annotations that ``LoadAnnotations`` reads.

    Raw annotations live in the frame of the stored image, whose size is
    ``ori_shape`` *before* this turn (already swapped by the caller for odd
    ``k``). Turning them here lets a test pipeline keep MMDetection's order
    (``Resize`` first, ``LoadAnnotations`` last), which evaluates boxes at the
    original scale.
    """
    instances = results.get('instances')
    if not instances:
        return
    ori_shape = results.get('ori_shape')
    if ori_shape is None:
        ori_shape = results['img_shape']
    # ori_shape was already swapped for odd k; undo that to get the old frame.
    height, width = (ori_shape[1], ori_shape[0]) if k % 2 else ori_shape[:2]
    matrix = rot90_matrix(k, int(height), int(width))

    for instance in instances:
        if 'bbox' in instance:
            bbox = np.asarray(instance['bbox'], dtype=np.float64)[None]
            instance['bbox'] = _rotate_box_array(bbox, matrix)[0].tolist()
        mask = instance.get('mask')
        if mask is None:
            continue
        if not isinstance(mask, list):
            raise TypeError(
                'Rot90 can turn raw polygon masks only, got '
                f'{type(mask).__name__}; put LoadAnnotations before Rot90 '
                'to turn decoded masks instead.')
        instance['mask'] = [
            _rotate_polygon(np.asarray(p, dtype=np.float64), matrix).tolist()
            for p in mask
        ]


def _rotate_boxes(results: dict, matrix: np.ndarray) -> None:
    boxes = results.get('gt_bboxes')
    if boxes is None:
        return
    if isinstance(boxes, BaseBoxes):
        # project_ maps the four corners and takes their hull, which is exact
        # for quarter turns (corners map onto corners).
        boxes.project_(matrix)
    elif isinstance(boxes, np.ndarray):
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f'Rot90 expects gt_bboxes as an [N, 4] (x1, y1, x2, y2) '
                f'array, got shape {boxes.shape}; use HorizontalBoxes for '
                f'other box types.')
        results['gt_bboxes'] = _rotate_box_array(boxes, matrix)
    else:
        raise TypeError(
            f'Rot90 supports gt_bboxes as mmdet BaseBoxes or an [N, 4] '
            f'ndarray, got {type(boxes).__name__}.')


def _rotate_masks(results: dict, k: int, matrix: np.ndarray,
                  new_shape: Sequence[int]) -> None:
    masks = results.get('gt_masks')
    if masks is None:
        return
    new_height, new_width = int(new_shape[0]), int(new_shape[1])
    if isinstance(masks, BitmapMasks):
        rotated = np.ascontiguousarray(np.rot90(masks.masks, k, axes=(1, 2)))
        results['gt_masks'] = BitmapMasks(rotated, new_height, new_width)
    elif isinstance(masks, PolygonMasks):
        polygons: List[List[np.ndarray]] = [
            [_rotate_polygon(p, matrix) for p in instance]
            for instance in masks.masks
        ]
        results['gt_masks'] = PolygonMasks(polygons, new_height, new_width)
    else:
        raise TypeError(
            f'Rot90 supports gt_masks as BitmapMasks or PolygonMasks, got '
            f'{type(masks).__name__}.')

