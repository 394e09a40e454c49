"""Data files shipped with :mod:`pyg_wpdd`.

``atom_init.json`` is the 92-value element feature table of CGCNN (Xie and Grossman,
Phys. Rev. Lett. 120, 145301, 2018), keyed by atomic number 1-100, under the MIT licence in
``LICENSE.cgcnn`` beside it.
"""
from pathlib import Path

RESOURCE_DIR = Path(__file__).resolve().parent
ATOM_INIT_PATH = RESOURCE_DIR / 'atom_init.json'

__all__ = ['RESOURCE_DIR', 'ATOM_INIT_PATH']
