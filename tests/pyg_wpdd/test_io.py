import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyg_wpdd.io import (StructureFileNotFoundError, atoms_to_data, read_cif_string,
                         read_structure)

COD_FILES = sorted((Path(__file__).resolve().parents[2] / 'data' / 'crystals' / 'cod_cif'
                    ).glob('*.cif'))

CIF_TEMPLATE = """data_test
_cell_length_a 4.0
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
{sites}
"""

MIXED_SITES = """Fe1 Fe 0.0 0.0 0.0 0.6
Co1 Co 0.0 0.0 0.0 0.4
O1 O 0.5 0.5 0.5 1.0"""

VACANCY_SITES = """Fe1 Fe 0.0 0.0 0.0 1.0
O1 O 0.5 0.5 0.5 0.3"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize('path', COD_FILES, ids=lambda p: p.stem)
def test_cod_cif_symmetry_expansion_matches_pymatgen(path):
    pymatgen_core = pytest.importorskip('pymatgen.core')
    data = read_structure(path)
    reference = pymatgen_core.Structure.from_file(str(path))
    assert data.num_nodes == len(reference)
    assert sorted(data.z.tolist()) == sorted(site.specie.Z for site in reference)
    assert torch.allclose(torch.linalg.det(data.cell[0].double()).abs(),
                          torch.tensor(reference.volume, dtype=torch.float64), rtol=1e-5)


def test_cod_rocksalt_has_conventional_cell():
    data = read_structure(next(p for p in COD_FILES if p.stem == '1000041'))
    assert data.num_nodes == 8
    assert sorted(data.z.tolist()) == [11] * 4 + [17] * 4
    assert data.material_id == '1000041'


def test_jarvis_poscars_read(data_dir):
    paths = sorted((data_dir / 'jarvis_sample').glob('*.vasp'))
    assert len(paths) == 70
    for path in paths:
        data = read_structure(path)
        assert data.pos.dtype == torch.float32
        assert data.cell.shape == (1, 3, 3)
        assert data.z.dtype == torch.long
        assert data.pbc.shape == (1, 3)
        assert data.num_nodes == data.pos.shape[0]


def test_perov5_csv_rows_read(data_dir):
    csv.field_size_limit(sys.maxsize)
    with open(data_dir / 'perov_5' / 'test.csv', newline='') as handle:
        rows = [row for _, row in zip(range(5), csv.DictReader(handle))]
    for row in rows:
        data = read_cif_string(row['cif'], row['material_id'])
        assert data.num_nodes == 5
        assert data.material_id == row['material_id']


def test_extended_xyz_and_atoms_objects(tmp_path):
    ase_io = pytest.importorskip('ase.io')
    from ase.build import bulk

    atoms = bulk('Cu', 'fcc', a=3.6, cubic=True)
    path = tmp_path / 'cu.extxyz'
    ase_io.write(path, atoms, format='extxyz')
    from_file = read_structure(path)
    from_object = read_structure(atoms, material_id='cu')
    assert torch.allclose(from_file.pos, from_object.pos, atol=1e-6)
    assert torch.allclose(from_file.cell, from_object.cell, atol=1e-6)
    assert from_object.z.tolist() == [29] * 4
    assert from_object.material_id == 'cu'


def test_pymatgen_structure():
    pymatgen_core = pytest.importorskip('pymatgen.core')
    structure = pymatgen_core.Structure(pymatgen_core.Lattice.cubic(4.0), ['Na', 'Cl'],
                                        [[0, 0, 0], [0.5, 0.5, 0.5]])
    data = read_structure(structure)
    assert data.z.tolist() == [11, 17]
    assert torch.allclose(data.pos[1], torch.tensor([2.0, 2.0, 2.0]))


def test_pymatgen_disordered_site():
    pymatgen_core = pytest.importorskip('pymatgen.core')
    structure = pymatgen_core.Structure(pymatgen_core.Lattice.cubic(4.0),
                                        [{'Fe': 0.6, 'Co': 0.4}, 'O'],
                                        [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="occupancy='majority'"):
        read_structure(structure)
    data = read_structure(structure, occupancy='majority')
    assert data.z.tolist() == [26, 8]


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match='not found') as info:
        read_structure(tmp_path / 'absent.cif')
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, StructureFileNotFoundError)


@pytest.mark.parametrize('name, text', [
    ('garbage.cif', 'this is not a crystal\n'),
    ('POSCAR-broken.vasp', 'comment\n1.0\n1 0 0\n'),
])
def test_unreadable_file_raises(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(ValueError, match='could not read') as info:
        read_structure(path)
    assert name in str(info.value)


def test_partial_occupancy_raises_with_site_and_option(tmp_path):
    path = _write(tmp_path, 'mixed.cif', CIF_TEMPLATE.format(sites=MIXED_SITES))
    with pytest.raises(ValueError) as info:
        read_structure(path)
    message = str(info.value)
    assert 'mixed.cif' in message
    assert 'Fe1' in message
    assert "occupancy='majority'" in message


def test_partial_occupancy_majority(tmp_path):
    path = _write(tmp_path, 'mixed.cif', CIF_TEMPLATE.format(sites=MIXED_SITES))
    data = read_structure(path, occupancy='majority')
    assert sorted(data.z.tolist()) == [8, 26]


def test_vacancy_majority_drops_site(tmp_path):
    path = _write(tmp_path, 'vacancy.cif', CIF_TEMPLATE.format(sites=VACANCY_SITES))
    with pytest.raises(ValueError, match='O1'):
        read_structure(path)
    data = read_structure(path, occupancy='majority')
    assert data.z.tolist() == [26]


def test_cif_string_partial_occupancy_names_material():
    text = CIF_TEMPLATE.format(sites=MIXED_SITES)
    with pytest.raises(ValueError, match='mp-123'):
        read_cif_string(text, 'mp-123')


@pytest.mark.parametrize('offset', [0.0001, 0.002])
def test_overlapping_atoms_raise_and_merge(tmp_path, offset):
    # 0.0001 (0.4 mÅ) is within ASE's 1e-3 fractional symmetry tolerance, so ASE drops the
    # second site; 0.002 (8 mÅ) is kept by ASE and caught by min_distance=0.01.
    sites = f"""Fe1 Fe 0.0 0.0 0.0 1.0
Fe2 Fe {offset} 0.0 0.0 1.0
O1 O 0.5 0.5 0.5 1.0"""
    path = _write(tmp_path, 'overlap.cif', CIF_TEMPLATE.format(sites=sites))
    with pytest.raises(ValueError) as info:
        read_structure(path, min_distance=0.01)
    message = str(info.value)
    assert 'overlap.cif' in message
    assert 'Fe2' in message or 'atoms 0 (Z=26) and 1' in message
    assert 'merge_tol' in message
    data = read_structure(path, min_distance=0.01, merge_tol=0.01)
    assert data.z.tolist() == [26, 8]


def test_overlap_across_cell_boundary():
    from ase import Atoms

    atoms = Atoms('Fe2', scaled_positions=[[0.0, 0.0, 0.0], [0.99999, 0.0, 0.0]],
                  cell=np.eye(3) * 4.0, pbc=True)
    with pytest.raises(ValueError, match='min_distance'):
        atoms_to_data(atoms)


def test_overlapping_different_elements_cannot_merge(tmp_path):
    sites = """Fe1 Fe 0.0 0.0 0.0 1.0
Co1 Co 0.0001 0.0 0.0 1.0"""
    path = _write(tmp_path, 'mixed_overlap.cif', CIF_TEMPLATE.format(sites=sites))
    with pytest.raises(ValueError, match='overlapping atoms'):
        read_structure(path, merge_tol=0.01)


@pytest.mark.parametrize('kwargs, match', [
    (dict(occupancy='random'), 'occupancy'),
    (dict(min_distance=-1.0), 'min_distance'),
    (dict(merge_tol=0.0), 'merge_tol'),
])
def test_bad_options_raise(data_dir, kwargs, match):
    with pytest.raises(ValueError, match=match):
        read_structure(data_dir / 'jarvis_sample' / 'POSCAR-JVASP-10.vasp', **kwargs)


def test_bad_source_type_raises():
    with pytest.raises(TypeError, match='read_cif_string'):
        read_structure(42)
    with pytest.raises(ValueError, match='data_ block'):
        read_cif_string('not a cif')
