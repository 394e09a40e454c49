"""Benchmark: robust pruning with and without TSCNC at 90 % and 99 % unstructured sparsity.

Runs the CPU demo configuration (``configs/prune_tscnc/demo_cpu.yaml``: SmallCNN, 4,000 embedded
CIFAR-10 training images, PGD-3 adversarial training) through the pipeline with pruning ratios 0.9
and 0.99, with AutoAttack switched off to save time. It prints clean accuracy, PGD-20 accuracy,
mean log10 condition number and sparsity for both arms, and the time ratio of the TSCNC arm to
the baseline.

    python benchmarks/prune_tscnc/bench_robustness.py

Results go to ``outputs/prune_tscnc/bench_robustness/`` (results.json, robustness.png).
"""

import time
from pathlib import Path

from prune_tscnc.pipeline import load_config, run_pipeline
from prune_tscnc.report import sparsity_of

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "prune_tscnc" / "demo_cpu.yaml"
OVERRIDES = ["pruning.ratios=[0.9, 0.99]", "evaluation.autoattack_images=0", "checkpoints=false"]


def main():
    config = load_config(CONFIG, OVERRIDES)
    started = time.perf_counter()
    results = run_pipeline(config, REPO / "outputs" / "prune_tscnc" / "bench_robustness")
    seconds = time.perf_counter() - started

    header = f"{'ratio':>5}  {'arm':>8}  {'sparsity %':>10}  {'clean %':>7}  {'PGD-20 %':>8}  {'mean log10 kappa':>16}"
    print(header)
    print("-" * len(header))
    arms = results["arms"]
    for index, ratio in enumerate(config["pruning"]["ratios"]):
        for arm in ("baseline", "tscnc"):
            result = arms[arm]["pruned"][index]
            print(f"{ratio:>5.2f}  {arm:>8}  {100 * sparsity_of(result):>10.1f}  {100 * result['clean_acc']:>7.1f}  "
                  f"{100 * result['pgd_acc']:>8.1f}  {result['mean_log10_kappa']:>16.2f}")
        base, tscnc = arms["baseline"]["pruned"][index], arms["tscnc"]["pruned"][index]
        print(f"{ratio:>5.2f}  {'delta':>8}  {'':>10}  {100 * (tscnc['clean_acc'] - base['clean_acc']):>+7.1f}  "
              f"{100 * (tscnc['pgd_acc'] - base['pgd_acc']):>+8.1f}  "
              f"{tscnc['mean_log10_kappa'] - base['mean_log10_kappa']:>+16.2f}")

    time_ratio = arms["tscnc"]["seconds"] / arms["baseline"]["seconds"]
    print(f"time: baseline {arms['baseline']['seconds']:.0f} s, tscnc {arms['tscnc']['seconds']:.0f} s "
          f"(ratio {time_ratio:.2f}), total {seconds:.0f} s")
    print(f"results: {results['paths']['results']}")
    print(f"plot:    {results['paths']['plot']}")


if __name__ == "__main__":
    main()
