"""Tests that both sparse-training examples run in quick mode and differ only in the pruner."""

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TORCH_PRUNING = EXAMPLES / "sparse_training_torch_pruning.py"
TSCNC = EXAMPLES / "sparse_training_tscnc.py"


def _changed_lines():
    before = TORCH_PRUNING.read_text().splitlines()
    after = TSCNC.read_text().splitlines()
    removed, added = [], []
    for line in difflib.unified_diff(before, after, lineterm="", n=0):
        if line.startswith("---") or line.startswith("+++") or line.startswith("@@"):
            continue
        (removed if line.startswith("-") else added).append(line[1:].strip())
    return removed, added


def test_diff_is_one_pruner_line():
    removed, added = _changed_lines()
    assert len(removed) == 1
    assert removed[0].startswith("pruner = tp.pruner.GroupNormPruner(")
    assert len(added) == 2
    assert "from prune_tscnc import TSCNCPruner" in added
    assert any(line.startswith("pruner = TSCNCPruner(") for line in added)


@pytest.mark.parametrize("script", [TORCH_PRUNING, TSCNC], ids=["torch_pruning", "tscnc"])
def test_example_runs_quick(script, tmp_path):
    # Run from a temporary directory: the examples must not depend on the working directory.
    completed = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert [line.split(":")[0].strip() for line in lines] == ["sparse", "pruned", "tuned"]
    assert "clean accuracy" in lines[-1]
