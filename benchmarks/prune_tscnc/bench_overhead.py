"""Time one TSCNC regularize() call against one PGD-10 adversarial training step.

Model: CIFAR ResNet-18 (``prune_tscnc.models.resnet18_cifar``, 11.2 M parameters), batch 32
of 3x32x32 inputs. The step is L-inf PGD-10 (eps 8/255, step 2/255) to build the batch, then
one forward, backward and SGD update. Torch-Pruning's own ``GroupNormPruner.regularize`` is
timed beside it as the peer. Targets: cheap form <= 10 % of a step, exact form <= 25 %.
The SVD reference of the exact form (``"exact_svd"``, no target) is timed with one call and
no warm-up, because it is the slowest by far.

Run from the repository root with no arguments::

    python benchmarks/prune_tscnc/bench_overhead.py
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torch_pruning as tp

from prune_tscnc import TSCNCPruner
from prune_tscnc.attacks import pgd_attack
from prune_tscnc.models import resnet18_cifar

TARGETS = {"cheap": 0.10, "exact": 0.25}

# (label, cond_form, sparsity, warm-up call first, timed calls)
VARIANTS = [
    ("TSCNC cheap, structured", "cheap", "structured", True, None),
    ("TSCNC cheap, unstructured", "cheap", "unstructured", True, None),
    ("TSCNC exact, structured", "exact", "structured", True, None),
    ("TSCNC exact_svd, structured", "exact_svd", "structured", False, 1),
]


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per step")
    parser.add_argument("--steps", type=int, default=2, help="timed PGD-10 training steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per regulariser")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet18_cifar()
    images = torch.rand(args.batch_size, 3, 32, 32)
    labels = torch.randint(0, 10, (args.batch_size,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    example = torch.rand(1, 3, 32, 32)

    def train_step() -> None:
        model.train()
        adversarial = pgd_attack(model, images, labels, eps=8 / 255, step_size=2 / 255, steps=10)
        optimizer.zero_grad()
        F.cross_entropy(model(adversarial), labels).backward()
        optimizer.step()

    print(f"threads: {torch.get_num_threads()}, batch {args.batch_size}, 32x32, ResNet-18",
          flush=True)
    # A small forward and backward pass warms up the kernels without a whole PGD step.
    F.cross_entropy(model(images[:2]), labels[:2]).backward()
    step_seconds = _median_seconds(train_step, args.steps)
    print(f"PGD-10 adversarial training step: {step_seconds:8.3f} s (median of {args.steps})",
          flush=True)

    # Gradients must exist before regularize(), as after loss.backward() in a real loop.
    F.cross_entropy(model(images), labels).backward()

    rows = []
    peer = tp.pruner.GroupNormPruner(model, example, tp.importance.GroupMagnitudeImportance(p=2),
                                     ignored_layers=[model.fc])
    peer.regularize(model)
    rows.append(("GroupNormPruner (peer)", None,
                 _median_seconds(lambda: peer.regularize(model), args.repeats)))

    for label, form, sparsity, warm_up, repeats in VARIANTS:
        pruner = TSCNCPruner(model, example, ignored_layers=[model.fc], cond_form=form,
                             sparsity=sparsity)
        if warm_up:
            pruner.regularize(model)
        seconds = _median_seconds(lambda: pruner.regularize(model), repeats or args.repeats)
        rows.append((label, form, seconds))
        print(f"  {label}: {seconds:.3f} s", flush=True)

    print()
    print(f"{'regulariser':34s} {'seconds':>9s} {'x step':>8s} {'target':>8s}")
    for name, form, seconds in rows:
        ratio = seconds / step_seconds
        target = "" if form not in TARGETS else f"<= {TARGETS[form]:.0%}"
        if form not in TARGETS:
            verdict = ""
        else:
            verdict = "met" if ratio <= TARGETS[form] else "MISSED"
        print(f"{name:34s} {seconds:9.3f} {ratio:8.1%} {target:>8s} {verdict}")
    peer_seconds = rows[0][2]
    for name, _, seconds in rows[1:]:
        print(f"{name} / GroupNormPruner: {seconds / peer_seconds:.2f}x")


if __name__ == "__main__":
    main()
