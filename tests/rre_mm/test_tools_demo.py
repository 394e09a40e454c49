"""Tests for the demo's config preparation, its arguments and TimeBudgetHook."""
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rre_mm import demo
from rre_mm.engine import TimeBudgetHook


def fake_runner():
    return SimpleNamespace(
        iter=6, max_iters=100,
        model=torch.nn.Linear(1, 1),
        train_loop=SimpleNamespace(stop_training=False),
        logger=SimpleNamespace(warning=lambda message: None))


def test_time_budget_hook_stops_when_spent():
    hook = TimeBudgetHook(max_minutes=0.5)
    runner = fake_runner()
    hook.before_train(runner)

    hook.after_train_iter(runner, batch_idx=0)
    assert runner.train_loop.stop_training is False

    hook._start = time.monotonic() - 31.0
    hook.after_train_iter(runner, batch_idx=0)
    assert runner.train_loop.stop_training is True
    assert hook.stopped_at_iter == 7


@pytest.mark.parametrize('minutes', [0, -1.0])
def test_time_budget_hook_rejects_non_positive(minutes):
    with pytest.raises(ValueError, match='max_minutes'):
        TimeBudgetHook(max_minutes=minutes)


@pytest.mark.parametrize('name', ['rrenet', 'cspnext'])
def test_demo_config_is_iteration_based(name, tmp_path, bccd_root):
    cfg = demo.build_demo_config(
        demo.CONFIG_DIR / demo.MODELS[name], tmp_path, bccd_root,
        iters=40, batch_size=2, minutes=1.0, seed=3, val_images=5)

    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    assert cfg.train_cfg.max_iters == 40
    assert cfg.param_scheduler[-1].end == 40
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.custom_hooks == [dict(type='TimeBudgetHook', max_minutes=1.0)]
    assert cfg.work_dir == str(tmp_path)
    assert cfg.custom_imports.imports == ['rre_mm']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert Path(cfg[loader].dataset.data_root) == bccd_root
    assert cfg.test_dataloader.dataset.ann_file == 'ImageSets/Main/val.txt'
    assert cfg.val_dataloader.dataset.indices == 5


@pytest.mark.parametrize('argv, message', [
    (['--minutes', '0'], '--minutes'),
    (['--iters', '0'], '--iters'),
    (['--batch-size', '0'], '--batch-size'),
    (['--val-images', '0'], '--val-images'),
    (['--data-root', '/nonexistent/bccd'], 'BCCD not found'),
])
def test_demo_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(argv)
    assert message in capsys.readouterr().err


def test_demo_adds_baseline_models():
    args = demo.parse_args(['--baseline', '--strict'])
    assert args.models == ['rrenet']
    assert args.baseline and args.strict
