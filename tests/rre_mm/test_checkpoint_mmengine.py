"""Train 2 iterations with MMDetection's Runner, then test, resume and load_from.

Under torch >= 2.6, ``torch.load`` defaults to ``weights_only=True`` and
rejects the HistoryBuffer and NumPy objects that MMEngine 0.10.7 writes into
its own checkpoints; importing ``rre_mm`` allowlists exactly those.
"""
import io
import json
import pickle
import shutil
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner

from rre_mm.engine import (getattr_history_buffer_statistic,
                           mmengine_checkpoint_globals)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'rre_mm' / 'rtmdet_rrenet-n_bccd.py'
TINY_SCALE = (160, 120)


@pytest.fixture(scope='module')
def tiny_config(shrink_bccd_config):
    """Build the RRENet BCCD config cut to 2 iterations on 160x120 images."""

    def build(work_dir, name):
        return _tiny_config(shrink_bccd_config, work_dir, name)

    return build


def _tiny_config(shrink_bccd_config, work_dir, name):
    cfg = Config.fromfile(str(CONFIG))
    cfg = shrink_bccd_config(cfg, work_dir, num_train=4, num_val=2,
                             batch_size=2)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for step in cfg[loader].dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = TINY_SCALE
    cfg.experiment_name = name
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory, bccd_root, tiny_config):
    """Work dir, config file and checkpoint of a 2-iteration training run."""
    work_dir = tmp_path_factory.mktemp('rre_train')
    cfg = tiny_config(work_dir, 'rre_ckpt_train')
    config_file = work_dir / 'tiny_rrenet_bccd.py'
    cfg.dump(str(config_file))

    runner = Runner.from_cfg(cfg)
    runner.train()

    checkpoint = work_dir / 'epoch_1.pth'
    assert checkpoint.is_file(), f'no checkpoint in {list(work_dir.iterdir())}'
    return dict(work_dir=work_dir, config_file=config_file,
                checkpoint=checkpoint, state_dict=runner.model.state_dict())


def registered_names():
    names = set()
    for entry in mmengine_checkpoint_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def test_checkpoint_globals_cover_mmengine_output(trained):
    # A fresh interpreter without rre_mm: in this one the registered globals
    # no longer count as unsafe.
    script = ('import json, sys, torch; print(json.dumps(torch.serialization.'
              'get_unsafe_globals_in_checkpoint(sys.argv[1])))')
    completed = subprocess.run(
        [sys.executable, '-c', script, str(trained['checkpoint'])],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    unsafe = set(json.loads(completed.stdout.strip().splitlines()[-1]))

    missing = unsafe - registered_names()
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe
    assert not missing, f'globals not allowlisted: {sorted(missing)}'


def test_checkpoint_loads_with_weights_only(trained):
    checkpoint = torch.load(str(trained['checkpoint']), weights_only=True)
    buffers = checkpoint['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    log_history, _ = buffers['train/loss'].data
    assert log_history.size >= 1
    assert checkpoint['meta']['iter'] == 2


def test_mmdet_test_script_loads_checkpoint(trained, tmp_path, mmdet_tools):
    """MMDetection's shipped tools/test.py, run as a user would."""
    command = [
        sys.executable, str(mmdet_tools / 'test.py'),
        str(trained['config_file']), str(trained['checkpoint']),
        '--work-dir', str(tmp_path)
    ]
    # cwd is neither the repo root nor the work dir: paths are absolute.
    completed = subprocess.run(command, cwd=tmp_path, capture_output=True,
                               text=True, timeout=600)
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-3000:]
    assert 'Unsupported global' not in log
    assert 'pascal_voc/mAP' in log


def test_resume_continues_training(trained, tmp_path, tiny_config):
    # Resume from a copy: the run below prunes old checkpoints in its work dir.
    checkpoint = tmp_path / 'epoch_1.pth'
    shutil.copyfile(trained['checkpoint'], checkpoint)
    cfg = tiny_config(tmp_path, 'rre_ckpt_resume')
    cfg.train_cfg.max_epochs = 2
    cfg.resume = True
    cfg.load_from = str(checkpoint)

    runner = Runner.from_cfg(cfg)
    runner.train()

    assert runner.epoch == 2
    assert runner.iter == 4
    assert (tmp_path / 'epoch_2.pth').is_file()


def test_load_from_restores_weights(trained, tmp_path, tiny_config):
    cfg = tiny_config(tmp_path, 'rre_ckpt_load_from')
    cfg.load_from = str(trained['checkpoint'])
    runner = Runner.from_cfg(cfg)

    runner.load_or_resume()

    loaded = runner.model.state_dict()
    for key, expected in trained['state_dict'].items():
        assert torch.equal(loaded[key], expected), key


class _FetchHistoryBufferInit:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_restricted_getattr_rejects_other_attributes():
    buffer = io.BytesIO()
    torch.save({'payload': _FetchHistoryBufferInit()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('name', ['min', 'max', 'current', 'mean'])
def test_restricted_getattr_returns_statistics(name):
    assert getattr_history_buffer_statistic(HistoryBuffer, name) is \
        getattr(HistoryBuffer, name)


def test_restricted_getattr_rejects_other_objects():
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        getattr_history_buffer_statistic(dict, 'min')


def test_config_runs_from_repo_root_convention():
    """The shipped config keeps a data_root relative to the repository root."""
    cfg = Config.fromfile(str(CONFIG))
    data_root = cfg.train_dataloader.dataset.data_root
    assert data_root == 'data/detection/bccd/'
    assert (REPO_ROOT / data_root / 'ImageSets' / 'Main').is_dir()
