import csv
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.loader import DataLoader

from pyg_wpdd.datasets import (CrystalCSVDataset, CrystalFolderDataset, load_dataset,
                               random_split)
from pyg_wpdd.transforms import WPDD, PeriodicKNNGraph

JARVIS_IDS = ['POSCAR-JVASP-10.vasp', 'POSCAR-JVASP-1372', 'POSCAR-JVASP-76308.vasp',
              'POSCAR-JVASP-13526.vasp']


@pytest.fixture
def structure_folder(tmp_path, data_dir):
    """Four JARVIS POSCARs (one slab) with an id_prop.csv, ids with and without extension."""
    folder = tmp_path / 'structures'
    folder.mkdir()
    for identifier in JARVIS_IDS:
        name = identifier if identifier.endswith('.vasp') else identifier + '.vasp'
        shutil.copy(data_dir / 'jarvis_sample' / name, folder / name)
    rows = [f'{identifier},{0.5 * i:.2f},{i}' for i, identifier in enumerate(JARVIS_IDS)]
    (folder / 'id_prop.csv').write_text('\n'.join(rows) + '\n')
    return folder


@pytest.fixture
def perov_csv(tmp_path, data_dir):
    """The first 12 rows of the Perov-5 test split."""
    csv.field_size_limit(sys.maxsize)
    with open(data_dir / 'perov_5' / 'test.csv', newline='') as handle:
        reader = csv.DictReader(handle)
        rows = [row for _, row in zip(range(12), reader)]
        fields = reader.fieldnames
    path = tmp_path / 'perov_small.csv'
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _graph_transform(k=8):
    return T.Compose([PeriodicKNNGraph(k=k), WPDD(k=12)])


def test_folder_dataset_reads_targets(tmp_path, structure_folder):
    dataset = CrystalFolderDataset(tmp_path / 'cache', source_dir=structure_folder,
                                   pre_transform=_graph_transform(), log=False)
    assert len(dataset) == 4
    assert dataset[0].material_id == 'POSCAR-JVASP-10'
    assert dataset[1].material_id == 'POSCAR-JVASP-1372'
    assert dataset[2].y.shape == (1, 2)
    assert torch.allclose(dataset[2].y, torch.tensor([[1.0, 2.0]]))
    assert dataset[3].wpdd.shape == (dataset[3].num_nodes, 13)


def test_folder_dataset_target_columns(tmp_path, structure_folder):
    dataset = CrystalFolderDataset(tmp_path / 'cache', source_dir=structure_folder,
                                   target_columns=[1], log=False)
    assert torch.allclose(dataset[3].y, torch.tensor([[3.0]]))


def test_folder_cache_reused_and_rebuilt(tmp_path, structure_folder):
    cache = tmp_path / 'cache'
    first = CrystalFolderDataset(cache, source_dir=structure_folder,
                                 pre_transform=_graph_transform(8), log=False)
    path = Path(first.processed_paths[0])
    stamp = path.stat().st_mtime_ns

    again = CrystalFolderDataset(cache, source_dir=structure_folder,
                                 pre_transform=_graph_transform(8), log=False)
    assert Path(again.processed_paths[0]) == path
    assert path.stat().st_mtime_ns == stamp

    changed = CrystalFolderDataset(cache, source_dir=structure_folder,
                                   pre_transform=_graph_transform(10), log=False)
    assert Path(changed.processed_paths[0]) != path
    assert torch.all(torch.bincount(changed[0].edge_index[1]) >= 10)

    other_target = CrystalFolderDataset(cache, source_dir=structure_folder, target_columns=[1],
                                        pre_transform=_graph_transform(8), log=False)
    assert Path(other_target.processed_paths[0]) != path
    assert float(other_target[1].y[0, 0]) == 1.0

    (structure_folder / 'id_prop.csv').write_text('POSCAR-JVASP-10.vasp,9.0,9\n')
    edited = CrystalFolderDataset(cache, source_dir=structure_folder,
                                  pre_transform=_graph_transform(8), log=False)
    assert Path(edited.processed_paths[0]) != path
    assert len(edited) == 1
    assert float(edited[0].y[0, 0]) == 9.0


def test_failed_processing_leaves_no_cache(tmp_path, structure_folder):
    class Failing:
        def __call__(self, data):
            raise RuntimeError('transform failed on purpose')

    cache = tmp_path / 'cache'
    with pytest.raises(RuntimeError, match='on purpose'):
        CrystalFolderDataset(cache, source_dir=structure_folder, pre_transform=Failing(),
                             log=False)
    assert list(cache.rglob('*.pt')) == []
    dataset = CrystalFolderDataset(cache, source_dir=structure_folder, log=False)
    assert len(dataset) == 4


def test_folder_dataset_bad_files(tmp_path, structure_folder):
    (structure_folder / 'broken.cif').write_text('not a cif\n')
    with open(structure_folder / 'id_prop.csv', 'a') as handle:
        handle.write('broken.cif,1.0,1\n')
    with pytest.raises(ValueError, match='broken.cif'):
        CrystalFolderDataset(tmp_path / 'cache', source_dir=structure_folder, log=False)
    with pytest.warns(UserWarning, match='Skipped 1'):
        dataset = CrystalFolderDataset(tmp_path / 'cache', source_dir=structure_folder,
                                       on_error='skip', log=False)
    assert len(dataset) == 4


def test_folder_dataset_missing_inputs(tmp_path, structure_folder):
    with pytest.raises(ValueError, match='id_prop.csv'):
        CrystalFolderDataset(tmp_path / 'cache', source_dir=tmp_path / 'nowhere', log=False)
    (structure_folder / 'id_prop.csv').write_text('POSCAR-JVASP-404,1.0\n')
    with pytest.raises(ValueError, match='POSCAR-JVASP-404'):
        CrystalFolderDataset(tmp_path / 'cache', source_dir=structure_folder, log=False)


def test_csv_dataset_targets_and_split(tmp_path, perov_csv):
    dataset = CrystalCSVDataset(tmp_path / 'cache', {'test': perov_csv}, split='test',
                                target_columns=['heat_ref', 'dir_gap'],
                                pre_transform=_graph_transform(), log=False)
    assert len(dataset) == 12
    assert dataset[0].y.shape == (1, 2)
    assert dataset[0].num_nodes == 5
    assert isinstance(dataset[0].material_id, str)
    with pytest.raises(ValueError, match='split'):
        CrystalCSVDataset(tmp_path / 'cache', {'test': perov_csv}, split='train', log=False)
    with pytest.raises(ValueError, match='no column'):
        CrystalCSVDataset(tmp_path / 'cache', perov_csv, target_columns='band_gap', log=False)


def test_csv_batches_through_dataloader(tmp_path, perov_csv):
    dataset = CrystalCSVDataset(tmp_path / 'cache', perov_csv,
                                pre_transform=_graph_transform(), log=False)
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch.num_graphs == 4
    assert batch.y.shape == (4, 1)
    assert batch.wpdd.shape == (20, 13)
    assert int(batch.edge_index.max()) == 19
    assert len(batch.material_id) == 4


def test_load_jarvis_sample_writes_only_to_root(tmp_path, data_dir):
    before = sorted(p.name for p in (data_dir / 'jarvis_sample').iterdir())
    dataset = load_dataset('jarvis_sample', root=tmp_path / 'cache',
                           pre_transform=_graph_transform(), log=False)
    assert len(dataset) == 50
    assert sorted(p.name for p in (data_dir / 'jarvis_sample').iterdir()) == before
    assert list((tmp_path / 'cache').rglob('data_*.pt'))
    sizes = torch.tensor([data.num_nodes for data in dataset])
    assert int(sizes.min()) == 1


def test_load_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='random_split'):
        load_dataset('perov_5', split='train', root=tmp_path)
    with pytest.raises(ValueError, match='heat_ref'):
        load_dataset('perov_5', split='val', target='energy', root=tmp_path)
    with pytest.raises(ValueError, match='jarvis_sample'):
        load_dataset('mp_20', root=tmp_path)
    with pytest.raises(ValueError, match='split=None'):
        load_dataset('jarvis_sample', split='val', root=tmp_path)


def test_random_split_reproducible(tmp_path, perov_csv):
    dataset = CrystalCSVDataset(tmp_path / 'cache', perov_csv, log=False)
    first = random_split(dataset, [0.5, 0.25, 0.25], seed=7)
    second = random_split(dataset, [0.5, 0.25, 0.25], seed=7)
    other = random_split(dataset, [0.5, 0.25, 0.25], seed=8)
    ids = [[d.material_id for d in part] for part in first]
    assert [len(part) for part in first] == [6, 3, 3]
    assert ids == [[d.material_id for d in part] for part in second]
    assert ids != [[d.material_id for d in part] for part in other]
    assert len(set(sum(ids, []))) == 12
    with pytest.raises(ValueError, match='sum to 1'):
        random_split(dataset, [0.5, 0.4])


@pytest.mark.slow
def test_load_perov5_val_full(tmp_path):
    dataset = load_dataset('perov_5', split='val', target='heat_ref', root=tmp_path,
                           pre_transform=_graph_transform(16), log=False)
    assert len(dataset) == 3787
    assert dataset[0].y.shape == (1, 1)
