"""Main job: robust pruning to 90 % sparsity with and without TSCNC on the embedded CIFAR-10 subset.

``python -m prune_tscnc.demo --out-dir outputs/prune_tscnc`` runs
``configs/prune_tscnc/demo_cpu.yaml`` through :func:`prune_tscnc.pipeline.run_pipeline`: a SmallCNN
is adversarially trained (L-inf PGD, eps 8/255), pruned to 90 % with global magnitude masks and
adversarially fine-tuned, once plainly and once with the TSCNC regulariser, under the same seed and
budget. It prints clean, PGD-20 and AutoAttack accuracy and the mean log10 condition number of
both arms, then the paths of ``results.json``, ``robustness.png`` and the checkpoints.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .pipeline import load_config, run_pipeline
from .report import format_table

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "prune_tscnc" / "demo_cpu.yaml"


def compare_arms(results: dict) -> list[str]:
    """Return one line per pruning ratio comparing the ``tscnc`` arm with the ``baseline`` arm."""
    arms = results["arms"]
    if "baseline" not in arms or "tscnc" not in arms:
        return []
    lines = []
    for base, tscnc in zip(arms["baseline"]["pruned"], arms["tscnc"]["pruned"]):
        decades = base["mean_log10_kappa"] - tscnc["mean_log10_kappa"]
        pgd_gain = 100 * (tscnc["pgd_acc"] - base["pgd_acc"])
        line = (f"at {base['pruning_ratio']:.0%}: TSCNC lowers mean log10 kappa by {decades:.2f} decades; "
                f"PGD-{base['pgd_steps']} accuracy changes by {pgd_gain:+.1f} points")
        if base.get("autoattack_acc") is not None and tscnc.get("autoattack_acc") is not None:
            gain = 100 * (tscnc["autoattack_acc"] - base["autoattack_acc"])
            images = base.get("autoattack_images")
            line += f", AutoAttack accuracy by {gain:+.1f} points (on {images} images, a noisy estimate)"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m prune_tscnc.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="outputs/prune_tscnc",
                        help="folder for results.json, robustness.png and checkpoints/ (default: %(default)s)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="YAML config (default: the CPU demo config)")
    parser.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="change one config value, e.g. train.epochs=2 (repeatable)")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.override)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    started = time.perf_counter()
    results = run_pipeline(config, args.out_dir)
    seconds = time.perf_counter() - started

    print(format_table(results))
    for line in compare_arms(results):
        print(line)
    train, finetune = config["train"], config["finetune"]
    print(
        f"budget per arm: {results['num_train_images']} training images, {train['epochs']} epochs of "
        f"PGD-{train['pgd_steps']} adversarial training, {finetune['epochs']} of fine-tuning; "
        f"{results['num_test_images']} test images; seed {config['seed']}; {seconds:.0f} s in total"
    )
    print(f"results:     {results['paths']['results']}")
    print(f"plot:        {results['paths']['plot']}")
    print(f"checkpoints: {Path(args.out_dir) / 'checkpoints'}")
    return results


if __name__ == "__main__":
    main()
