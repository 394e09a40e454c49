"""Each plugin imports without the other plugins' host frameworks.

Every case runs in a fresh interpreter whose path finder does not see the blocked top-level
packages, as if they were not installed.
"""
import subprocess
import sys
import textwrap

import pytest

MMDET_STACK = ['mmdet', 'mmcv', 'mmengine']
PYG_STACK = ['torch_geometric', 'ase']
PRUNING_STACK = ['torch_pruning', 'art']

BLOCKER = textwrap.dedent('''
    import importlib.machinery
    import sys

    BLOCKED = set({blocked!r})

    class HidePackages(importlib.machinery.PathFinder):
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path = [HidePackages if finder is importlib.machinery.PathFinder else finder
                     for finder in sys.meta_path]
    import {module}
    for name in BLOCKED:
        assert name not in sys.modules, f'{{name}} was imported'
    print('imported {module}')
''')


@pytest.mark.parametrize('module, blocked', [
    ('rre_mm', PYG_STACK + PRUNING_STACK),
    ('rre_mm.layers', MMDET_STACK + PYG_STACK + PRUNING_STACK),
    ('pyg_wpdd', MMDET_STACK + PRUNING_STACK),
    ('prune_tscnc', MMDET_STACK + PYG_STACK),
])
def test_plugin_imports_without_other_frameworks(module, blocked):
    script = BLOCKER.format(blocked=sorted(blocked), module=module)

    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=300)

    assert result.returncode == 0, result.stderr
    assert f'imported {module}' in result.stdout
