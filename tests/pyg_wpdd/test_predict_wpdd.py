import csv
import io
import os
from pathlib import Path

import pytest
import torch

from pyg_wpdd import predict, train

PROJECT_DIR = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_DIR / 'configs' / 'pyg_wpdd'
POSCAR = PROJECT_DIR / 'data' / 'crystals' / 'jarvis_sample' / 'POSCAR-JVASP-10.vasp'
CIF = PROJECT_DIR / 'data' / 'crystals' / 'cod_cif' / '1000041.cif'


@pytest.fixture(scope='module', params=['perov5_heat_ref_wpddformer.yaml',
                                        'perov5_heat_ref_wpddformer_updd.yaml'])
def checkpoint_path(request, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp('predict')
    train.main([str(CONFIG_DIR / request.param), '--override', 'data.max_crystals=16',
                'train.epochs=1', 'train.batch_size=8', 'train.progress=false',
                'graph.wpdd_k=12', 'model.channels=16', 'model.num_gaussians=16',
                '--out-dir', str(out_dir)])
    return out_dir / 'checkpoint.pt'


def test_predict_poscar_and_cif(checkpoint_path, tmp_path, capsys):
    output = tmp_path / 'predictions.csv'

    rows = predict.main([str(checkpoint_path), str(POSCAR), str(CIF), '--output', str(output)])

    printed = capsys.readouterr().out
    written = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [row['material_id'] for row in rows] == ['POSCAR-JVASP-10', '1000041']
    assert [row['material_id'] for row in written] == ['POSCAR-JVASP-10', '1000041']
    assert all(torch.isfinite(torch.tensor(row['heat_ref'])) for row in rows)
    assert 'file,material_id,heat_ref' in printed


def test_predict_matches_model_on_same_graph(checkpoint_path):
    model, checkpoint = predict.load_checkpoint(checkpoint_path)
    rows = predict.predict_files(model, checkpoint, [CIF])

    from pyg_wpdd._train_config import build_transform
    from pyg_wpdd.io import read_structure
    data = build_transform(checkpoint['config']['graph'])(read_structure(CIF))
    with torch.no_grad():
        expected = model(data) * checkpoint['target_std'][0] + checkpoint['target_mean'][0]

    assert rows[0]['heat_ref'] == pytest.approx(float(expected), abs=1e-5)


def test_predict_folder(checkpoint_path):
    files = predict.find_structure_files([CIF.parent])
    model, checkpoint = predict.load_checkpoint(checkpoint_path)

    rows = predict.predict_files(model, checkpoint, files, batch_size=4)

    assert len(rows) == len(list(CIF.parent.glob('*.cif')))
    assert all(row['file'].endswith('.cif') for row in rows)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        predict.main([str(tmp_path / 'none.pt'), str(CIF)])


def test_missing_structure_file(checkpoint_path, tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.cif'):
        predict.main([str(checkpoint_path), str(tmp_path / 'nothing.cif')])


def test_folder_without_structures(checkpoint_path, tmp_path):
    with pytest.raises(FileNotFoundError, match='no structure files'):
        predict.main([str(checkpoint_path), str(tmp_path)])


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'other.pt'
    torch.save({'weights': torch.zeros(2)}, path)

    with pytest.raises(ValueError, match="key 'model_state' is missing"):
        predict.load_checkpoint(path)


def test_cif_is_not_a_checkpoint():
    with pytest.raises(ValueError, match='is not a checkpoint written by pyg_wpdd.train'):
        predict.main([str(CIF), str(CIF)])


def test_occupancy_flag_reads_partial_site(checkpoint_path, tmp_path):
    partial = tmp_path / 'partial.cif'
    partial.write_text(CIF.read_text().replace('Na1 Na1+ 4 a 0. 0. 0. 1. 0 d',
                                               'Na1 Na1+ 4 a 0. 0. 0. 0.5 0 d'))
    with pytest.raises(ValueError, match='partially occupied'):
        predict.main([str(checkpoint_path), str(partial)])

    rows = predict.main([str(checkpoint_path), str(partial), '--occupancy', 'majority'])
    assert len(rows) == 1
    assert torch.isfinite(torch.tensor(rows[0]['heat_ref']))


def test_command_line_reports_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr('sys.argv', ['predict', str(tmp_path / 'none.pt'), str(CIF)])
    with pytest.raises(SystemExit) as exit_info:
        predict._command_line()
    assert exit_info.value.code == 2
    assert 'checkpoint not found' in capsys.readouterr().err


def test_output_has_default_permissions(checkpoint_path, tmp_path):
    output = tmp_path / 'predictions.csv'
    predict.main([str(checkpoint_path), str(CIF), '--output', str(output)])
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask
