"""Allow ``torch.load(weights_only=True)`` to read checkpoints that MMEngine writes.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``. MMEngine
0.10.7 calls ``torch.load`` without that argument, and its own checkpoints
hold more than tensors: the message hub stores
:class:`mmengine.logging.HistoryBuffer` objects (NumPy arrays inside) and NumPy
scalars such as the ETA. Loading such a checkpoint for ``tools/test.py``,
``resume=True`` or ``load_from`` then fails with
``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

:func:`register_mmengine_checkpoint_globals` allowlists exactly the globals
found in a checkpoint written by MMEngine 0.10.7's ``CheckpointHook`` with
NumPy 2.4 (listed by ``torch.serialization.get_unsafe_globals_in_checkpoint``),
plus their NumPy 1.x module paths and the NumPy dtype classes that the
unpickler must rebuild. ``weights_only`` stays on for everything else.

``HistoryBuffer.__getstate__`` also stores its statistics methods
(``HistoryBuffer.min`` and friends), which pickle writes as
``getattr(HistoryBuffer, 'min')``. Allowing the builtin ``getattr`` would let a
checkpoint fetch any attribute of any allowed class, and MMEngine later calls
what it finds there, so a restricted stand-in is registered under the name
``builtins.getattr`` instead.
"""
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# Statistics that HistoryBuffer registers for itself in _set_default_statistics.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# Dtypes of the NumPy arrays and scalars that MMEngine logs; the unpickler
# checks the dtype *class* (e.g. numpy.dtypes.Float64DType) when rebuilding one.
_NUMPY_DTYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                 np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                 np.float64)

_registered = False


def getattr_history_buffer_statistic(obj: Any, name: str) -> Callable:
    """Return ``getattr(HistoryBuffer, name)`` for a default statistic only.

    Args:
        obj (Any): Object whose attribute the pickle requests; must be
            :class:`mmengine.logging.HistoryBuffer`.
        name (str): Attribute name; one of ``HISTORY_BUFFER_STATISTICS``.

    Raises:
        pickle.UnpicklingError: For any other object or name.
    """
    if obj is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'weights_only checkpoint loading allows getattr only for the '
        f'HistoryBuffer statistics {HISTORY_BUFFER_STATISTICS}, got '
        f'getattr({obj!r}, {name!r}). If you trust this file, load it with '
        f'torch.load(..., weights_only=False).')


def mmengine_checkpoint_globals(
) -> List[Union[Callable, Tuple[Callable, str]]]:
    """List the globals to allowlist, as ``add_safe_globals`` takes them."""
    try:
        from numpy._core import multiarray  # NumPy >= 2.0
    except ImportError:
        from numpy.core import multiarray  # NumPy 1.x

    safe_globals: List[Union[Callable, Tuple[Callable, str]]] = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
    ]
    # NumPy 2.x writes the `numpy._core` path and 1.x the `numpy.core` one;
    # either may meet either NumPy when a checkpoint moves between machines.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        safe_globals.append((multiarray.scalar, f'{module}.scalar'))
        safe_globals.append(
            (multiarray._reconstruct, f'{module}._reconstruct'))
    safe_globals.append(
        (getattr_history_buffer_statistic, 'builtins.getattr'))
    safe_globals.extend(type(np.dtype(dtype)) for dtype in _NUMPY_DTYPES)
    return safe_globals


def register_mmengine_checkpoint_globals() -> bool:
    """Allowlist the globals of MMEngine checkpoints for ``weights_only`` loads.

    Runs once per process and is called when :mod:`rre_mm.engine` is imported,
    which ``custom_imports=dict(imports=['rre_mm'])`` does in every worker.

    Returns:
        bool: Whether globals were registered. ``False`` on torch < 2.6, where
        ``torch.load`` still defaults to ``weights_only=False``.
    """
    global _registered
    if _registered:
        return True
    if torch.torch_version.TorchVersion(torch.__version__) < (2, 6):
        return False
    torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    _registered = True
    return True
