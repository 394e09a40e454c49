"""Shared fixtures for the rre_mm tests: paths and small BCCD configs."""
from pathlib import Path

import pytest

pytest.importorskip('mmdet')

REPO_ROOT = Path(__file__).resolve().parents[2]
BCCD_ROOT = REPO_ROOT / 'data' / 'detection' / 'bccd'
MMDET_TOOLS = Path(__import__('mmdet').__file__).resolve().parent / '.mim' / 'tools'


def _shrink_bccd_config(cfg, work_dir: Path, num_train: int = 8,
                       num_val: int = 4, batch_size: int = 2):
    """Point a BCCD config at the absolute data root and cut it to a few images.

    The result trains 1 epoch of ``num_train / batch_size`` iterations with one
    dataloader worker, validates once at the end, and keeps one checkpoint in
    ``work_dir``.
    """
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.dataset.data_root = str(BCCD_ROOT) + '/'
        loader.dataset.indices = num_train if name == 'train_dataloader' \
            else num_val
        loader.batch_size = batch_size
        loader.num_workers = 0
        loader.persistent_workers = False

    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1,
                         val_interval=1)
    cfg.param_scheduler = [
        dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook')
    cfg.custom_hooks = []
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.fixture(scope='session')
def bccd_root() -> Path:
    if not (BCCD_ROOT / 'ImageSets' / 'Main' / 'val.txt').is_file():
        pytest.skip(f'BCCD data not found under {BCCD_ROOT}')
    return BCCD_ROOT


@pytest.fixture(scope='session', autouse=True)
def mmdet_scope():
    """Register MMDetection's modules once and make 'mmdet' the default scope."""
    from mmdet.utils import register_all_modules

    import rre_mm.datasets  # noqa: F401  (registers Rot90, RandomRot90)
    import rre_mm.engine  # noqa: F401  (checkpoint globals, hooks)
    register_all_modules(init_default_scope=True)


@pytest.fixture(scope='session')
def shrink_bccd_config():
    """The function that cuts a BCCD config to a few images and 1 epoch."""
    return _shrink_bccd_config


@pytest.fixture(scope='session')
def mmdet_tools() -> Path:
    return MMDET_TOOLS
