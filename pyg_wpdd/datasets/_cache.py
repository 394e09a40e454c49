"""Cache keys, atomic writes and default folders for the crystal datasets."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, List, Sequence

from torch_geometric.data import Data, InMemoryDataset

from .._files import give_default_permissions

# Bump when the processed format changes, so that old caches are rebuilt.
CACHE_VERSION = 1


def file_fingerprint(paths: Iterable[Path]) -> List[Any]:
    """Return ``(name, size, mtime_ns)`` per file: changes when a file is edited or replaced."""
    fingerprint = []
    for path in paths:
        stat = path.stat()
        fingerprint.append([path.name, stat.st_size, stat.st_mtime_ns])
    return fingerprint


def short_hash(*parts: Any) -> str:
    """Return a 10-hex-digit hash of JSON-serialisable parts (``repr`` for the rest)."""
    text = json.dumps([CACHE_VERSION, *parts], default=repr, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def save_atomic(data_list: Sequence[Data], path: str) -> None:
    """Collate and save a dataset so that ``path`` is either complete or absent.

    The file is written under a temporary name in the same folder and moved into place with
    :func:`os.replace`, so an interrupted run leaves no partial cache behind.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix='.tmp-', suffix='.pt', dir=folder)
    os.close(handle)
    try:
        InMemoryDataset.save(list(data_list), tmp)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def default_cache_root() -> Path:
    """Return ``$PYG_WPDD_CACHE``, else ``$XDG_CACHE_HOME/pyg_wpdd``, else ``~/.cache/pyg_wpdd``."""
    if os.environ.get('PYG_WPDD_CACHE'):
        return Path(os.environ['PYG_WPDD_CACHE'])
    base = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(base) / 'pyg_wpdd'


def default_data_dir() -> Path:
    """Return ``$PYG_WPDD_DATA`` or the ``data/`` folder of the source checkout."""
    if os.environ.get('PYG_WPDD_DATA'):
        return Path(os.environ['PYG_WPDD_DATA'])
    return Path(__file__).resolve().parents[2] / 'data'
