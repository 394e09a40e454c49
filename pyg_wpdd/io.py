r"""Read crystal structures into :class:`torch_geometric.data.Data` objects.

Files are parsed by ASE (:func:`ase.io.read`): CIF with symmetry expansion, VASP POSCAR and
extended XYZ, plus any other format ASE reads. ASE :class:`~ase.Atoms` and pymatgen
:class:`~pymatgen.core.Structure` objects are accepted directly (pymatgen is imported only when
such an object is passed).

Every reader returns a ``Data`` with

- ``pos`` ``[num_atoms, 3]`` float32 Cartesian positions in Å,
- ``cell`` ``[1, 3, 3]`` float32 lattice vectors as rows,
- ``z`` ``[num_atoms]`` long atomic numbers,
- ``pbc`` ``[1, 3]`` bool periodic directions,
- ``num_nodes`` and, when known, ``material_id`` (str).

Partially occupied sites and atoms closer than ``min_distance`` raise a :class:`ValueError`
that names the source, the site and the option that handles it.
"""
from __future__ import annotations

import io as _io
import os
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

from .neighbors import minimum_image_distances

PathLike = Union[str, os.PathLike]

#: Atoms closer than this (Å) are rejected as duplicates unless ``merge_tol`` merges them.
DEFAULT_MIN_DISTANCE = 1e-3

_OCCUPANCY_MODES = ('error', 'majority')

# Site occupancies this close to 1 count as full (CIFs often write 0.9999 or 1.0001).
_FULL_OCCUPANCY_TOL = 1e-3


class StructureFileNotFoundError(FileNotFoundError, ValueError):
    """A structure file does not exist. It is also a :class:`ValueError`."""


def _check_options(occupancy: str, min_distance: float, merge_tol: Optional[float]) -> None:
    if occupancy not in _OCCUPANCY_MODES:
        raise ValueError(
            f'Invalid occupancy={occupancy!r}. Use one of {_OCCUPANCY_MODES}: '
            "'error' rejects partially occupied sites, 'majority' keeps the majority species.")
    if not min_distance >= 0:
        raise ValueError(f'min_distance must be a non-negative distance in Å, '
                         f'got {min_distance!r}.')
    if merge_tol is not None and not merge_tol > 0:
        raise ValueError(f'merge_tol must be a positive distance in Å or None, got {merge_tol!r}.')


def _site_occupancies(atoms: Any) -> List[Tuple[str, Dict[str, float]]]:
    """Return ``(site label, {species: occupancy})`` per atom from ASE's CIF metadata."""
    occupancy = atoms.info.get('occupancy')
    if not occupancy:
        return []
    labels = atoms.info.get('_atom_site_label')
    # ASE stores the index of the CIF site each atom came from as 'spacegroup_kinds'.
    kinds = atoms.arrays.get('spacegroup_kinds')
    if kinds is None:
        kinds = atoms.get_tags()
    sites = []
    for tag in kinds.tolist():
        label = str(labels[tag]) if labels is not None and tag < len(labels) else f'#{tag}'
        sites.append((label, {str(k): float(v) for k, v in occupancy[str(tag)].items()}))
    return sites


def _check_dropped_sites(atoms: Any, name: str, merge_tol: Optional[float]) -> None:
    """Raise when ASE dropped a CIF site because it coincides with another site.

    ASE's symmetry expansion keeps only the first of several sites closer than its symmetry
    tolerance (1e-3 in fractional coordinates), so such overlaps never reach the distance
    check. A fully occupied site that produced no atom is one of these. Partially occupied
    sites sharing a position are mixed sites, which the occupancy check handles.
    """
    labels = atoms.info.get('_atom_site_label')
    kinds = atoms.arrays.get('spacegroup_kinds')
    if labels is None or kinds is None or merge_tol is not None:
        return
    occupancies = atoms.info.get('_atom_site_occupancy')
    if occupancies is None:
        occupancies = [1.0] * len(labels)
    dropped = [site for site in sorted(set(range(len(labels))) - set(kinds.tolist()))
               if float(occupancies[site]) > 1.0 - _FULL_OCCUPANCY_TOL]
    if dropped:
        raise ValueError(
            f'{name}: site {labels[dropped[0]]} lies within 1e-3 (fractional) of another '
            'site, so ASE dropped it as a duplicate. Pass merge_tol=<Å> to accept merging '
            "duplicate atoms, or occupancy='majority' if the sites share a position as a "
            'mixed site.')


def _apply_occupancy(atoms: Any, name: str, occupancy: str) -> Any:
    """Reject or resolve partially occupied sites of an ASE ``Atoms`` read from a CIF."""
    sites = _site_occupancies(atoms)
    if not sites:
        return atoms

    keep = np.ones(len(atoms), dtype=bool)
    for index, (label, species) in enumerate(sites):
        total = sum(species.values())
        partial = len(species) > 1 or abs(total - 1.0) > _FULL_OCCUPANCY_TOL
        if not partial:
            continue
        if total > 1.0 + _FULL_OCCUPANCY_TOL:
            described = ', '.join(f'{s} {o:g}' for s, o in species.items())
            raise ValueError(
                f'{name}: site {label} (atom {index}) contains overlapping atoms whose '
                f'occupancies sum to {total:g} ({described}). Remove the duplicate sites, or '
                'give occupancies that sum to at most 1 for a mixed site.')
        if occupancy == 'error':
            described = ', '.join(f'{s} {o:g}' for s, o in species.items())
            raise ValueError(
                f'{name}: site {label} (atom {index}) is partially occupied ({described}). '
                "Pass occupancy='majority' to keep the majority species at each site.")

        # ASE already put the species with the largest occupancy on the atom; a vacancy
        # fraction larger than that removes the site.
        vacancy = 1.0 - total
        keep[index] = max(species.values()) >= vacancy
    return atoms[keep]


def _merge_or_reject_overlaps(data: Data, name: str, min_distance: float,
                              merge_tol: Optional[float]) -> Data:
    """Raise on atoms closer than ``min_distance``, or merge those within ``merge_tol``."""
    if data.num_nodes < 2:
        return data
    threshold = max(min_distance, merge_tol or 0.0)
    if threshold == 0.0:
        return data

    dist = minimum_image_distances(data.pos, data.cell[0], data.pbc[0])
    dist.fill_diagonal_(float('inf'))
    close_i, close_j = torch.nonzero(torch.triu(dist < threshold), as_tuple=True)
    if close_i.numel() == 0:
        return data

    if merge_tol is None:
        i, j = int(close_i[0]), int(close_j[0])
        raise ValueError(
            f'{name}: atoms {i} (Z={int(data.z[i])}) and {j} (Z={int(data.z[j])}) are '
            f'{float(dist[i, j]):.2e} Å apart, closer than min_distance={min_distance} Å. '
            'Pass merge_tol=<Å> to merge duplicate atoms of the same element, or lower '
            'min_distance if the atoms are real.')

    # Keep the lowest index of each group of duplicates; duplicates must share an element.
    drop = torch.zeros(data.num_nodes, dtype=torch.bool)
    for i, j in zip(close_i.tolist(), close_j.tolist()):
        if int(data.z[i]) != int(data.z[j]):
            raise ValueError(
                f'{name}: atoms {i} (Z={int(data.z[i])}) and {j} (Z={int(data.z[j])}) are '
                f'{float(dist[i, j]):.2e} Å apart but are different elements, so merge_tol '
                f'cannot merge them. Pass occupancy=\'majority\' for mixed sites or fix the file.')
        if not bool(drop[i]):
            drop[j] = True
    keep = ~drop
    merged = data.clone()
    merged.pos = data.pos[keep]
    merged.z = data.z[keep]
    merged.num_nodes = int(keep.sum())
    return merged


def atoms_to_data(atoms: Any, material_id: Optional[str] = None, *,
                  min_distance: float = DEFAULT_MIN_DISTANCE,
                  merge_tol: Optional[float] = None, source: Optional[str] = None) -> Data:
    r"""Convert an ASE :class:`~ase.Atoms` object to a crystal ``Data``.

    Args:
        atoms (ase.Atoms): The structure. Directions with ``pbc`` false need no cell vector.
        material_id (str, optional): Stored as ``data.material_id``. (default: :obj:`None`)
        min_distance (float, optional): Atoms closer than this (Å) raise a ``ValueError``.
            (default: :obj:`1e-3`)
        merge_tol (float, optional): Merge atoms of the same element closer than this (Å),
            keeping the first. (default: :obj:`None`)
        source (str, optional): File or record named in error messages. (default:
            ``material_id`` or the chemical formula)
    """
    _check_options('error', min_distance, merge_tol)
    name = source or material_id or atoms.get_chemical_formula()
    if len(atoms) == 0:
        raise ValueError(f'{name}: the structure has no atoms.')

    data = Data(
        pos=torch.tensor(np.asarray(atoms.get_positions()), dtype=torch.float32),
        cell=torch.tensor(np.asarray(atoms.get_cell()[:]), dtype=torch.float32).reshape(1, 3, 3),
        z=torch.tensor(np.asarray(atoms.get_atomic_numbers()), dtype=torch.long),
        pbc=torch.tensor(np.asarray(atoms.get_pbc()), dtype=torch.bool).reshape(1, 3),
        num_nodes=len(atoms),
    )
    if material_id is not None:
        data.material_id = str(material_id)
    return _merge_or_reject_overlaps(data, name, min_distance, merge_tol)


def structure_to_data(structure: Any, material_id: Optional[str] = None, *,
                      occupancy: str = 'error', min_distance: float = DEFAULT_MIN_DISTANCE,
                      merge_tol: Optional[float] = None) -> Data:
    r"""Convert a pymatgen :class:`~pymatgen.core.Structure` to a crystal ``Data``.

    Args:
        structure (pymatgen.core.Structure): The structure. Disordered sites raise a
            ``ValueError`` unless ``occupancy='majority'``.
        material_id (str, optional): Stored as ``data.material_id``. (default: :obj:`None`)
        occupancy (str, optional): ``'error'`` or ``'majority'`` (keep the species with the
            largest occupancy, drop the site when the vacancy is larger). (default: ``'error'``)
        min_distance (float, optional): See :func:`atoms_to_data`. (default: :obj:`1e-3`)
        merge_tol (float, optional): See :func:`atoms_to_data`. (default: :obj:`None`)
    """
    _check_options(occupancy, min_distance, merge_tol)
    from ase import Atoms  # noqa: PLC0415

    name = material_id or structure.composition.reduced_formula
    numbers, positions = [], []
    for index, site in enumerate(structure):
        species = {el.symbol if hasattr(el, 'symbol') else str(el): float(occ)
                   for el, occ in site.species.items()}
        total = sum(species.values())
        if len(species) > 1 or abs(total - 1.0) > _FULL_OCCUPANCY_TOL:
            if occupancy == 'error':
                described = ', '.join(f'{s} {o:g}' for s, o in species.items())
                raise ValueError(
                    f'{name}: site {site.label or index} (atom {index}) is partially occupied '
                    f"({described}). Pass occupancy='majority' to keep the majority species.")
            majority, fraction = max(species.items(), key=lambda item: item[1])
            if fraction < 1.0 - total:
                continue
        else:
            majority = next(iter(species))
        numbers.append(majority)
        positions.append(site.coords)

    atoms = Atoms(symbols=numbers, positions=np.array(positions).reshape(-1, 3),
                  cell=structure.lattice.matrix, pbc=True)
    return atoms_to_data(atoms, material_id, min_distance=min_distance, merge_tol=merge_tol)


def _read_ase(source: Any, name: str, format: Optional[str], occupancy: str,
              merge_tol: Optional[float]) -> Any:
    """Parse one structure with ASE, turning parser failures into a ``ValueError``."""
    import ase.io  # noqa: PLC0415

    kwargs: Dict[str, Any] = {}
    if format == 'cif' or (format is None and name.lower().endswith('.cif')):
        # Keep the CIF tags so that errors can name the site label.
        kwargs['store_tags'] = True
    try:
        with warnings.catch_warnings():
            # ASE 3.29 warns when a CIF names its crystal system next to the space group
            # (seen on the COD files). It uses the space group either way, so the warning
            # carries no information here.
            warnings.filterwarnings('ignore', message='crystal system .* is not interpreted')
            atoms = ase.io.read(source, index=0, format=format, **kwargs)
    # ASE's readers raise many exception types on malformed input (ValueError, KeyError,
    # IndexError, StopIteration, RuntimeError, ...); report all of them the same way.
    except Exception as error:  # noqa: BLE001
        hint = f" as format '{format}'" if format else ''
        raise ValueError(f'{name}: could not read the structure{hint} with ase.io.read: '
                         f'{type(error).__name__}: {error}. Check that the file is a valid '
                         'CIF, POSCAR or extended XYZ file, or pass format=...') from error
    _check_dropped_sites(atoms, name, merge_tol)
    return _apply_occupancy(atoms, name, occupancy)


def read_structure(source: Union[PathLike, Any], format: Optional[str] = None, *,
                   material_id: Optional[str] = None, occupancy: str = 'error',
                   min_distance: float = DEFAULT_MIN_DISTANCE,
                   merge_tol: Optional[float] = None) -> Data:
    r"""Read one crystal from a file, an ASE ``Atoms`` or a pymatgen ``Structure``.

    Args:
        source (str, os.PathLike, ase.Atoms or pymatgen.core.Structure): What to read. Files
            are parsed with :func:`ase.io.read`; CIF symmetry operations are applied.
        format (str, optional): ASE format name such as ``'cif'``, ``'vasp'`` or
            ``'extxyz'``. (default: guessed by ASE from the file name; files named
            ``POSCAR*`` or ``*.vasp`` are read as ``'vasp'``)
        material_id (str, optional): Stored as ``data.material_id``. (default: the file
            name without extension)
        occupancy (str, optional): ``'error'`` rejects partially occupied sites,
            ``'majority'`` keeps the majority species per site. (default: ``'error'``)
        min_distance (float, optional): Atoms closer than this (Å) raise a ``ValueError``.
            (default: :obj:`1e-3`)
        merge_tol (float, optional): Merge same-element atoms closer than this (Å).
            (default: :obj:`None`)

    .. note::
        In CIFs, ASE itself drops a site within 1e-3 (fractional) of another site. Without
        ``merge_tol`` this raises a ``ValueError``; with any ``merge_tol`` ASE's merge is
        kept, even when ``merge_tol`` is smaller than that distance.

    Raises:
        ValueError: for a missing or unreadable file, partial occupancy, overlapping atoms,
            or a bad option. A missing file raises :class:`StructureFileNotFoundError`, which
            is both a ``FileNotFoundError`` and a ``ValueError``.
    """
    _check_options(occupancy, min_distance, merge_tol)

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise StructureFileNotFoundError(
                f'Structure file not found: {path}. Check the path, or pass an ase.Atoms or '
                'pymatgen Structure object.')
        if format is None and (path.name.upper().startswith(('POSCAR', 'CONTCAR'))
                               or path.suffix.lower() == '.vasp'):
            format = 'vasp'
        atoms = _read_ase(str(path), str(path), format, occupancy, merge_tol)
        return atoms_to_data(atoms, material_id or path.stem, min_distance=min_distance,
                             merge_tol=merge_tol, source=str(path))

    type_name = f'{type(source).__module__}.{type(source).__name__}'
    if type_name.startswith('ase.'):
        return atoms_to_data(source, material_id, min_distance=min_distance,
                             merge_tol=merge_tol)
    if type_name.startswith('pymatgen.') and hasattr(source, 'lattice'):
        return structure_to_data(source, material_id, occupancy=occupancy,
                                 min_distance=min_distance, merge_tol=merge_tol)
    raise TypeError(f'Cannot read a structure from {type_name}. Pass a file path, an ase.Atoms '
                    'or a pymatgen Structure, or a CIF string to read_cif_string().')


def read_cif_string(text: str, material_id: Optional[str] = None, *,
                    occupancy: str = 'error', min_distance: float = DEFAULT_MIN_DISTANCE,
                    merge_tol: Optional[float] = None) -> Data:
    r"""Read one crystal from the text of a CIF file (for example a CSV cell of Perov-5).

    Arguments as in :func:`read_structure`; errors name ``material_id`` when given.
    """
    _check_options(occupancy, min_distance, merge_tol)
    if not isinstance(text, str) or 'data_' not in text:
        preview = repr(text)[:60]
        raise ValueError(f'{material_id or "CIF string"}: expected the text of a CIF file with '
                         f'a data_ block, got {preview}.')
    name = f'CIF {material_id}' if material_id is not None else 'CIF string'
    atoms = _read_ase(_io.StringIO(text), name, 'cif', occupancy, merge_tol)
    return atoms_to_data(atoms, material_id, min_distance=min_distance, merge_tol=merge_tol,
                         source=name)
