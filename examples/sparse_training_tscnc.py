"""Sparse training, structured pruning and fine-tuning of a small CNN on the embedded CIFAR-10 subset.

The usual Torch-Pruning recipe: call ``pruner.update_regularizer()`` once per epoch and
``pruner.regularize(model)`` between ``loss.backward()`` and ``optimizer.step()``, then remove
channels with ``pruner.step()`` and fine-tune. ``sparse_training_torch_pruning.py`` and
``sparse_training_tscnc.py`` differ only in the pruner they build.

    python examples/sparse_training_torch_pruning.py [--quick]
"""

import argparse

import torch
import torch.nn.functional as F
import torch_pruning as tp

from prune_tscnc import TSCNCPruner
from prune_tscnc import layer_condition_numbers
from prune_tscnc.attacks import accuracy
from prune_tscnc.data import CIFAR10Folder, make_loader, train_transform
from prune_tscnc.models import SmallCNN


def train(model, loader, epochs, lr, pruner=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for _ in range(epochs):
        if pruner is not None:
            pruner.update_regularizer()
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels)
            loss.backward()
            if pruner is not None:
                pruner.regularize(model)  # adds the regulariser's gradients into .grad
            optimizer.step()


def report(stage, model, test_images, test_labels):
    kappas = torch.tensor(list(layer_condition_numbers(model).values()))
    mean_log_kappa = kappas.clamp(max=1e7).log10().mean()  # a singular layer (inf) counts as 1e7
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{stage:>7}: {parameters:,} parameters, clean accuracy {accuracy(model, test_images, test_labels):.3f}, "
          f"mean log10 condition number {mean_log_kappa:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 images per class and one epoch per phase")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove (default: 0.5)")
    args = parser.parse_args()
    per_class, sparse_epochs, finetune_epochs = (100, 1, 1) if args.quick else (400, 8, 3)

    torch.manual_seed(0)
    train_set = CIFAR10Folder(split="train", transform=train_transform(seed=0), max_per_class=per_class)
    loader = make_loader(train_set, batch_size=128, shuffle=True, seed=0)
    test_images, test_labels = CIFAR10Folder(split="test").tensors()

    model = SmallCNN()
    example_inputs = torch.zeros(1, 3, 32, 32)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    ignored = [model.classifier[-1]]  # keep the 10 class outputs
    pruner = TSCNCPruner(model, example_inputs, importance, pruning_ratio=args.ratio, ignored_layers=ignored, lambda_sparse=1e-4, lambda_cond=0.1)

    train(model, loader, sparse_epochs, lr=0.05, pruner=pruner)
    report("sparse", model, test_images, test_labels)

    pruner.step()
    report("pruned", model, test_images, test_labels)

    train(model, loader, finetune_epochs, lr=0.01)
    report("tuned", model, test_images, test_labels)


if __name__ == "__main__":
    main()
