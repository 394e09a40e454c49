"""Tables and plots of robust-pruning results, as produced by :func:`prune_tscnc.pipeline.run_pipeline`."""

from __future__ import annotations

import math
from pathlib import Path

import torch

__all__ = ["KAPPA_CAP", "format_table", "plot_results", "sparsity_of"]

_ARM_COLORS = {"baseline": "tab:gray", "tscnc": "tab:blue"}
_ARM_MARKERS = {"baseline": "s", "tscnc": "o"}

# Singular values below float32 machine epsilon times sigma_max are numerical zeros, so reports
# cap kappa at 1 / eps (log10 = 6.92) instead of letting one singular layer give inf.
KAPPA_CAP = 1.0 / float(torch.finfo(torch.float32).eps)


def sparsity_of(result: dict) -> float:
    """Return the sparsity to plot: masked-weight fraction (unstructured) or parameters removed (structured)."""
    if result.get("pruning_mode") == "structured":
        return result["parameter_sparsity"]
    return result["targeted_sparsity"]


def _percent(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.1f}"


def format_table(results: dict) -> str:
    """Return a plain-text table with one row per arm and pruning ratio (accuracies in %)."""
    header = ("arm", "mode", "ratio", "sparsity %", "clean %", "PGD %", "AA % (n)", "mean log10 kappa", "nonzero params")
    rows = [header]
    for arm, arm_results in results["arms"].items():
        entries = [("dense", arm_results["dense"])] + [(None, r) for r in arm_results["pruned"]]
        for label, result in entries:
            mode = label or result["pruning_mode"]
            ratio = "-" if label else f"{result['pruning_ratio']:.2f}"
            sparsity = 0.0 if label else sparsity_of(result)
            pgd = result.get("pgd_acc")
            pgd_text = _percent(pgd) if pgd is None else f"{_percent(pgd)} ({result['pgd_steps']} st)"
            auto = result.get("autoattack_acc")
            auto_text = "-" if auto is None else f"{_percent(auto)} ({result['autoattack_images']})"
            rows.append((
                arm, mode, ratio, _percent(sparsity), _percent(result["clean_acc"]), pgd_text, auto_text,
                f"{result['mean_log10_kappa']:.2f}", f"{result['num_nonzero_parameters']:,}",
            ))

    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def plot_results(results: dict, path: str | Path) -> Path:
    """Plot robust accuracy against sparsity and per-layer log10 condition numbers for each arm.

    Left: PGD accuracy against sparsity (the dense model sits at 0 when it was attacked). Right:
    log10 kappa of every convolution and linear layer, one line per arm and pruning ratio, with
    kappa capped at :data:`KAPPA_CAP` as in the reported means.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))

    layer_names: list[str] = []
    line_styles = ["-", "--", ":", "-."]
    for arm, arm_results in results["arms"].items():
        color = _ARM_COLORS.get(arm)
        points = []
        dense = arm_results["dense"]
        if dense.get("pgd_acc") is not None:
            points.append((0.0, dense["pgd_acc"]))
        points += [(sparsity_of(r), r["pgd_acc"]) for r in arm_results["pruned"] if r.get("pgd_acc") is not None]
        if points:
            xs, ys = zip(*sorted(points))
            left.plot([100 * x for x in xs], [100 * y for y in ys], marker=_ARM_MARKERS.get(arm, "o"),
                      color=color, label=arm)

        curves = [("dense", dense)] + [(f"{r['pruning_ratio']:.0%}", r) for r in arm_results["pruned"]]
        for index, (label, result) in enumerate(curves):
            kappas = result["condition_numbers"]
            layer_names = list(kappas)
            # results.json stores an infinite kappa as null, which reads back as None.
            capped = [KAPPA_CAP if k is None else min(k, KAPPA_CAP) for k in kappas.values()]
            values = [math.log10(k) if k > 0 else float("nan") for k in capped]
            right.plot(range(len(values)), values, marker=_ARM_MARKERS.get(arm, "o"), markersize=4, color=color,
                       linestyle=line_styles[index % len(line_styles)], alpha=0.5 if label == "dense" else 1.0,
                       label=f"{arm}, {label} (mean {result['mean_log10_kappa']:.2f})")

    steps = next((r.get("pgd_steps") for a in results["arms"].values() for r in a["pruned"] if r.get("pgd_steps")), None)
    left.set_xlabel("sparsity (%)")
    left.set_ylabel(f"PGD-{steps} accuracy (%)" if steps else "PGD accuracy (%)")
    left.set_title("Robust accuracy at eps = {:.2g}/255".format(255 * results["config"]["attack"]["eps"]))
    left.grid(alpha=0.3)
    left.legend()

    right.set_xticks(range(len(layer_names)))
    right.set_xticklabels(layer_names, rotation=60, ha="right", fontsize=7)
    right.set_ylabel(f"log10 condition number (capped at {math.log10(KAPPA_CAP):.2f})")
    right.set_title("Per-layer condition numbers")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)

    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
