import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pyg_wpdd import train
from pyg_wpdd._train_config import load_config, parse_overrides
from pyg_wpdd._train_data import split_indices, subset_rows

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_DIR / 'configs' / 'pyg_wpdd'
TINY_OVERRIDES = [
    'data.max_crystals=24',
    'train.epochs=1',
    'train.batch_size=8',
    'train.progress=false',
    'graph.wpdd_k=12',
    'model.channels=16',
    'model.num_gaussians=32',
]


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('train')
    metrics = train.main([str(CONFIG_DIR / 'perov5_heat_ref_wpddformer.yaml'),
                          '--override', *TINY_OVERRIDES, '--out-dir', str(out_dir)])
    return out_dir, metrics


def test_train_writes_outputs(tiny_run):
    out_dir, _ = tiny_run

    assert (out_dir / 'checkpoint.pt').is_file()
    assert (out_dir / 'metrics.json').is_file()
    assert (out_dir / 'config.yaml').is_file()
    assert (out_dir / 'parity.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not [p for p in out_dir.iterdir() if p.name.endswith('.tmp')]


def test_train_metrics(tiny_run):
    out_dir, metrics = tiny_run
    saved = json.loads((out_dir / 'metrics.json').read_text())

    assert saved['split_sizes'] == {'train': 19, 'val': 2, 'test': 3}
    assert saved['num_crystals'] == 24
    assert saved['epochs_run'] == 1
    assert math.isfinite(saved['test_mae'])
    assert math.isfinite(saved['mean_predictor_test_mae'])
    assert saved['test_mae'] == pytest.approx(metrics['test_mae'])


def test_mean_predictor_matches_training_mean(tiny_run):
    out_dir, metrics = tiny_run
    checkpoint = torch.load(out_dir / 'checkpoint.pt', weights_only=True)
    pred, true = metrics['test_predictions']

    expected = float((true - checkpoint['target_mean'][0]).abs().mean())
    assert metrics['mean_predictor_test_mae'] == pytest.approx(expected, abs=1e-6)
    assert metrics['test_mae'] == pytest.approx(float((pred - true).abs().mean()), abs=1e-6)


def test_checkpoint_loads_with_weights_only(tiny_run):
    out_dir, _ = tiny_run

    checkpoint = torch.load(out_dir / 'checkpoint.pt', weights_only=True)

    assert checkpoint['config']['model']['channels'] == 16
    assert checkpoint['config']['graph']['wpdd_k'] == 12
    assert len(checkpoint['target_mean']) == 1
    assert checkpoint['target_std'][0] > 0
    assert 'lin_out.weight' in checkpoint['model_state']


def test_saved_config_reloads(tiny_run):
    out_dir, _ = tiny_run
    saved = yaml.safe_load((out_dir / 'config.yaml').read_text())

    config = load_config(saved)

    assert config['data']['max_crystals'] == 24
    assert config['model']['name'] == 'wpddformer'


def test_train_cli_from_other_directory(tmp_path):
    out_dir = tmp_path / 'cli'
    overrides = [o for o in TINY_OVERRIDES if not o.startswith('data.max')]
    command = [sys.executable, '-m', 'pyg_wpdd.train',
               str(CONFIG_DIR / 'perov5_heat_ref_cgcnn.yaml'), '--override',
               'data.max_crystals=16', *overrides[:4], '--out-dir', str(out_dir)]

    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})

    assert result.returncode == 0, result.stderr[-2000:]
    assert 'test MAE (heat_ref)' in result.stdout
    assert (out_dir / 'checkpoint.pt').is_file()


@pytest.mark.parametrize('name', ['perov5_heat_ref_wpddformer.yaml', 'perov5_heat_ref_cgcnn.yaml',
                                  'jarvis_gap_wpddformer.yaml',
                                  'perov5_heat_ref_wpddformer_updd.yaml'])
def test_shipped_configs_are_valid(name):
    config = load_config(CONFIG_DIR / name)

    assert config['model']['name'] in ('wpddformer', 'cgcnn')


def test_split_is_seeded_and_disjoint():
    first = split_indices(100, [0.8, 0.1, 0.1], seed=3)
    second = split_indices(100, [0.8, 0.1, 0.1], seed=3)
    other = split_indices(100, [0.8, 0.1, 0.1], seed=4)
    joined = torch.cat([first['train'], first['val'], first['test']])

    assert torch.equal(first['test'], second['test'])
    assert not torch.equal(first['test'], other['test'])
    assert sorted(joined.tolist()) == list(range(100))
    assert [first[k].numel() for k in ('train', 'val', 'test')] == [80, 10, 10]


def test_subset_rows_keeps_order():
    rows = list(range(50))

    subset = subset_rows(rows, 10, seed=0)

    assert len(subset) == 10
    assert subset == sorted(subset)
    assert subset_rows(rows, None, seed=0) == rows


def test_parse_overrides():
    overrides = parse_overrides(['train.epochs=5', 'model.channels=64', 'data.root=null'])

    assert overrides == {'train': {'epochs': 5}, 'model': {'channels': 64},
                         'data': {'root': None}}


@pytest.mark.parametrize('overrides,match', [
    ({'train': {'epoch': 3}}, "unknown config key 'train.epoch'"),
    ({'optimizer': {'lr': 1}}, "unknown config key 'optimizer'"),
    ({'model': {'widht': 3}}, "unknown config key 'model.widht'"),
    ({'model': {'name': 'alignn'}}, 'unknown model.name'),
    ({'model': {'wpdd_dim': 51}}, 'set from the graph section'),
    ({'train': {'epochs': 0}}, "'train.epochs' must be a positive integer"),
    ({'train': {'lr': -1.0}}, "'train.lr' must be a positive number"),
    ({'train': {'device': 'tpu'}}, 'invalid train.device'),
    ({'data': {'split_fractions': [0.5, 0.5]}}, 'data.split_fractions'),
    ({'data': {'dataset': 'mp_20'}}, "unknown data.dataset 'mp_20'"),
    ({'data': {'dataset': 'folder'}}, 'data.root is required'),
    ({'graph': {'knn_k': 0}}, "'graph.knn_k' must be a positive integer"),
    ({'graph': {'updd': 'yes'}}, 'graph.updd must be true or false'),
    ({'train': 5}, "'train' must be a mapping"),
])
def test_invalid_config_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(CONFIG_DIR / 'perov5_heat_ref_wpddformer.yaml', overrides)


def test_invalid_override_syntax():
    with pytest.raises(ValueError, match='KEY=VALUE'):
        parse_overrides(['train.epochs'])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.yaml'):
        train.main([str(tmp_path / 'missing.yaml')])


def test_missing_target_column(tmp_path):
    with pytest.raises(ValueError, match="column 'band_gap' not found"):
        train.main([str(CONFIG_DIR / 'perov5_heat_ref_wpddformer.yaml'), '--override',
                    *TINY_OVERRIDES, 'data.target=band_gap', '--out-dir', str(tmp_path)])


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such_folder'):
        train.main([str(CONFIG_DIR / 'jarvis_gap_wpddformer.yaml'), '--override',
                    f'data.root={tmp_path / "no_such_folder"}', 'data.max_crystals=4',
                    '--out-dir', str(tmp_path)])


def test_failed_run_keeps_previous_checkpoint(tiny_run, tmp_path):
    out_dir, _ = tiny_run
    before = (out_dir / 'checkpoint.pt').read_bytes()

    with pytest.raises(ValueError):
        train.main([str(CONFIG_DIR / 'perov5_heat_ref_wpddformer.yaml'), '--override',
                    *TINY_OVERRIDES, 'data.target=band_gap', '--out-dir', str(out_dir)])

    assert (out_dir / 'checkpoint.pt').read_bytes() == before


def test_demo_tiny_run(tmp_path, capsys):
    from pyg_wpdd import demo

    summary = demo.main(['--out-dir', str(tmp_path), '--max-crystals', '30', '--epochs', '1'])

    printed = capsys.readouterr().out
    assert (tmp_path / 'parity.png').is_file()
    assert (tmp_path / 'summary.json').is_file()
    assert (tmp_path / 'wpddformer' / 'checkpoint.pt').is_file()
    assert (tmp_path / 'cgcnn' / 'checkpoint.pt').is_file()
    assert set(summary['test_mae']) == {'wpddformer', 'cgcnn'}
    assert 'mean predictor' in printed
    assert str(tmp_path / 'summary.json') in printed


@pytest.mark.parametrize('name', ['wpddformer', 'cgcnn'])
def test_demo_config_files_match_demo(name):
    from pyg_wpdd import demo

    from_file = load_config(CONFIG_DIR / f'perov5_heat_ref_demo_{name}.yaml')
    from_demo = load_config({**demo.DEMO_CONFIG, 'model': demo.DEMO_MODELS[name]})

    assert from_file == from_demo
