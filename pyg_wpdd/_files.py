"""Helpers for files written through a temporary file and os.replace."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union


def give_default_permissions(path: Union[str, Path]) -> None:
    """Set ``path`` to the permissions a newly created file gets (0666 minus the umask).

    :func:`tempfile.mkstemp` creates files that only their owner can read (0600). Outputs
    written through a temporary file and :func:`os.replace` would keep that mode.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
