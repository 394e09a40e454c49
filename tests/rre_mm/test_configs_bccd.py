"""Every config in configs/rre_mm builds through mmengine and the mmdet registry."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.utils import import_modules_from_strings
from mmdet.registry import MODELS

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'rre_mm'

CONFIG_FILES = sorted(
    path for path in CONFIG_DIR.glob('*.py') if not path.name.startswith('_'))
CONFIG_IDS = [path.stem for path in CONFIG_FILES]


def load(path):
    cfg = Config.fromfile(str(path))
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    return cfg


def iter_dicts(node):
    """Yield every dict nested anywhere in a config value."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from iter_dicts(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from iter_dicts(value)


def test_config_folder_is_not_empty():
    assert len(CONFIG_FILES) >= 3, CONFIG_IDS


@pytest.mark.parametrize('path', CONFIG_FILES, ids=CONFIG_IDS)
def test_config_builds_model(path):
    cfg = load(path)

    model = MODELS.build(cfg.model)

    assert model.bbox_head.num_classes == 3
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize('path', CONFIG_FILES, ids=CONFIG_IDS)
def test_config_downloads_nothing(path):
    cfg = load(path)
    for node in iter_dicts(cfg.model):
        assert node.get('type') != 'Pretrained', node
    assert cfg.get('load_from') is None


@pytest.mark.parametrize('path', CONFIG_FILES, ids=CONFIG_IDS)
def test_config_uses_bccd_splits(path):
    cfg = load(path)
    splits = {
        'train_dataloader': 'ImageSets/Main/train.txt',
        'val_dataloader': 'ImageSets/Main/val.txt',
        'test_dataloader': 'ImageSets/Main/test.txt',
    }
    for loader, ann_file in splits.items():
        dataset = cfg[loader].dataset
        assert dataset.type == 'VOCDataset'
        assert dataset.data_root == 'data/detection/bccd/'
        assert dataset.ann_file == ann_file
        assert dataset.metainfo.classes == ('RBC', 'WBC', 'Platelets')
        assert '_delete_' not in dataset
    assert cfg.val_evaluator.type == 'VOCMetric'
    assert cfg.val_evaluator.iou_thrs == 0.5
    assert '../shared' not in cfg.pretty_text


# Rotated-evaluation configs share the model of their upright config.
MODEL_CONFIGS = [path for path in CONFIG_FILES if 'rot90' not in path.stem]


@pytest.mark.parametrize('path', MODEL_CONFIGS,
                         ids=[path.stem for path in MODEL_CONFIGS])
def test_config_forward_on_small_batch(path):
    """One loss and one predict step on a random 2-image batch at 64x96."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    cfg = load(path)
    model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    samples = []
    for _ in range(2):
        sample = DetDataSample(metainfo=dict(
            img_shape=(64, 96), ori_shape=(64, 96),
            pad_shape=(64, 96), batch_input_shape=(64, 96),
            scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 12.0, 50.0, 60.0]]),
            labels=torch.tensor([1]))
        samples.append(sample)
    inputs = torch.rand(2, 3, 64, 96) * 255

    model.train()
    data = model.data_preprocessor(
        dict(inputs=list(inputs), data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    model.eval()
    with torch.no_grad():
        predictions = model(**data, mode='predict')

    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert len(predictions) == 2
    assert predictions[0].pred_instances.bboxes.shape[-1] == 4


ROT90_CONFIGS = [path for path in CONFIG_FILES if 'rot90' in path.stem]


@pytest.mark.parametrize('path', ROT90_CONFIGS,
                         ids=[path.stem for path in ROT90_CONFIGS])
def test_rot90_config_rotates_test_images(path):
    cfg = load(path)
    steps = [step['type'] for step in cfg.test_dataloader.dataset.pipeline]
    assert steps.index('Rot90') < steps.index('Resize') < \
        steps.index('LoadAnnotations')
