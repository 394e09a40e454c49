r"""Robust-pruning pipeline: adversarial training, pruning, adversarial fine-tuning, evaluation.

Feng, Lin, Gao and Wei, "Lipschitz Constant Meets Condition Number: Learning Robust and Compact
Deep Neural Networks" (https://arxiv.org/abs/2503.20454) train with a transformed-L1 sparsity
penalty (TSC) and a condition-number penalty (CNC) so that a network stays well conditioned after
heavy pruning. This module runs that recipe and a plain baseline side by side under one seed:

1. L-inf PGD adversarial training (Madry et al.). The ``tscnc`` arm calls
   ``pruner.regularize(model)`` after ``loss.backward()``, which adds the gradient of
   :math:`\lambda_s \mathrm{TSC} + \lambda_c \mathrm{CNC}` to ``.grad``.
2. Pruning of a copy of the trained model for each ratio: unstructured global magnitude masks
   (``torch.nn.utils.prune.global_unstructured``) or structured channel pruning through
   Torch-Pruning (``pruner.step()``).
3. Adversarial fine-tuning with the masks (or the pruned shapes) fixed, TSCNC still active in the
   ``tscnc`` arm.
4. Clean accuracy, PGD-20 and AutoAttack robust accuracy (ART), per-layer condition numbers,
   sparsity and parameter counts, written to ``results.json`` and ``robustness.png``.

Run it as ``python -m prune_tscnc.pipeline CONFIG [--override key=value ...] [--out-dir DIR]``.
Configuration keys and defaults are in :data:`DEFAULT_CONFIG`; YAML files only override them.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm.auto import tqdm

from .attacks import accuracy, evaluate_autoattack, evaluate_pgd, pgd_attack
from .constraints.checks import CONDITION_FORMS
from .data import CIFAR10Folder, default_data_root, make_loader, train_transform
from .masks import SCORES, MaskSet, global_magnitude_prune, sparsity_summary
from .models import MODEL_NAMES, build_model, resize_to_state_dict
from .report import KAPPA_CAP, format_table, plot_results

__all__ = [
    "DEFAULT_CONFIG",
    "load_checkpoint",
    "load_config",
    "main",
    "run_pipeline",
    "save_checkpoint",
]

ARMS = ("baseline", "tscnc")
PRUNING_MODES = ("unstructured", "structured")

# Every key the pipeline reads. A YAML file or --override may change values, never add keys.
DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # "auto" picks CUDA when available
    "arms": ["baseline", "tscnc"],
    "data": {
        "root": None,  # None: the repository's data/images/cifar10
        "train_per_class": None,  # None: every training image
        "test_per_class": None,
        "batch_size": 128,
        "augment": True,  # random crop with 4-pixel padding and horizontal flip
        "num_workers": 0,
    },
    "model": {"name": "resnet18", "kwargs": {}},
    "attack": {"eps": 8 / 255, "step_size": 2 / 255},
    "train": {
        "epochs": 100,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "pgd_steps": 10,
        # Clip the total gradient norm after the TSCNC gradients (also in fine-tuning); None
        # leaves gradients alone. The exact condition form needs it, see regularize().
        "clip_grad_norm": None,
    },
    "pruning": {
        "mode": "unstructured",
        "ratios": [0.9, 0.95, 0.99],
        "ignore_classifier": True,  # keep the last linear layer dense
        "ignore_first_conv": False,  # keep the first convolution (3 input channels) dense
        "score": "magnitude",  # or "normalized_magnitude" (unstructured only, see masks.py)
    },
    "finetune": {"epochs": 20, "lr": 0.01, "pgd_steps": 10},
    "tscnc": {
        "lambda_sparse": 1e-4,
        "lambda_cond": 1e-3,
        "finetune_lambda_sparse": 0.0,  # the masks fix sparsity, so fine-tuning keeps CNC only
        "a": 1.0,
        "cond_form": "cheap",
        "kappa_target": 10.0,
    },
    "evaluation": {
        "pgd_steps": 20,
        "pgd_restarts": 1,
        "attack_dense": False,  # also attack the unpruned models
        "autoattack_images": 1000,  # 0 switches AutoAttack off
        "autoattack_apgd_steps": 100,
        "autoattack_square_queries": 5000,
        "batch_size": 256,
    },
    "checkpoints": True,
    "progress": True,
}


# ---------------------------------------------------------------------------------------------
# configuration


def _parse_value(value: Any) -> Any:
    """Turn strings like ``"8/255"`` and ``"1e-3"`` into floats.

    Configs may write budgets as fractions, and PyYAML (YAML 1.1) reads ``1e-3`` without a
    decimal point as a string.
    """
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        pass
    if value.count("/") == 1:
        numerator, denominator = value.split("/")
        try:
            return float(numerator) / float(denominator)
        except (ValueError, ZeroDivisionError):
            return value
    return value


def _merge(base: dict, update: Mapping, prefix: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            raise ValueError(f"unknown config key {path!r}; valid keys here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and key != "kwargs":
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {path!r} must be a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, prefix=f"{path}.")
        else:
            merged[key] = _parse_value(value)
    return merged


def _apply_override(config: dict, override: str) -> dict:
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like key.subkey=value, e.g. train.epochs=2")
    key, raw_value = override.split("=", 1)
    value = yaml.safe_load(raw_value)
    update: dict = {}
    node = update
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return _merge(config, update)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_config(config: dict) -> dict:
    """Raise ``ValueError`` naming the key, the bad value and the fix for any invalid setting."""
    _require(_is_int(config["seed"]), f"seed must be an integer, got {config['seed']!r}")
    _require(config["device"] in ("auto", "cpu", "cuda") or str(config["device"]).startswith("cuda:"),
             f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {config['device']!r}")
    arms = config["arms"]
    _require(isinstance(arms, list) and arms and all(arm in ARMS for arm in arms) and len(set(arms)) == len(arms),
             f"arms must be a non-empty list drawn from {list(ARMS)}, got {arms!r}")

    data = config["data"]
    _require(_is_int(data["batch_size"]) and data["batch_size"] > 0,
             f"data.batch_size must be a positive integer, got {data['batch_size']!r}")
    for key in ("train_per_class", "test_per_class"):
        value = data[key]
        _require(value is None or (_is_int(value) and value > 0),
                 f"data.{key} must be a positive integer or null (all images), got {value!r}")

    _require(config["model"]["name"] in MODEL_NAMES,
             f"model.name must be one of {list(MODEL_NAMES)}, got {config['model']['name']!r}")
    _require(isinstance(config["model"]["kwargs"], dict),
             f"model.kwargs must be a mapping, got {config['model']['kwargs']!r}")

    attack = config["attack"]
    _require(_is_number(attack["eps"]) and 0 < attack["eps"] <= 1,
             f"attack.eps must be in (0, 1] in pixel units (e.g. 8/255), got {attack['eps']!r}")
    _require(_is_number(attack["step_size"]) and attack["step_size"] > 0,
             f"attack.step_size must be positive (e.g. 2/255), got {attack['step_size']!r}")

    for section in ("train", "finetune"):
        values = config[section]
        _require(_is_int(values["epochs"]) and values["epochs"] >= 0,
                 f"{section}.epochs must be an integer >= 0, got {values['epochs']!r}")
        _require(_is_number(values["lr"]) and values["lr"] > 0, f"{section}.lr must be positive, got {values['lr']!r}")
        _require(_is_int(values["pgd_steps"]) and values["pgd_steps"] >= 0,
                 f"{section}.pgd_steps must be an integer >= 0 (0 trains on clean images), got {values['pgd_steps']!r}")
    clip = config["train"]["clip_grad_norm"]
    _require(clip is None or (_is_number(clip) and clip > 0),
             f"train.clip_grad_norm must be a positive number or null (no clipping), got {clip!r}")

    pruning = config["pruning"]
    _require(pruning["mode"] in PRUNING_MODES,
             f"pruning.mode must be one of {list(PRUNING_MODES)}, got {pruning['mode']!r}")
    ratios = pruning["ratios"]
    _require(isinstance(ratios, list) and ratios and all(_is_number(r) and 0 < r < 1 for r in ratios),
             f"pruning.ratios must be a non-empty list of fractions in (0, 1) such as [0.9, 0.99], got {ratios!r}")

    _require(pruning["score"] in SCORES, f"pruning.score must be one of {list(SCORES)}, got {pruning['score']!r}")

    tscnc = config["tscnc"]
    for key in ("lambda_sparse", "lambda_cond", "finetune_lambda_sparse"):
        _require(_is_number(tscnc[key]) and tscnc[key] >= 0, f"tscnc.{key} must be a number >= 0, got {tscnc[key]!r}")
    _require(_is_number(tscnc["a"]) and tscnc["a"] > 0, f"tscnc.a must be positive, got {tscnc['a']!r}")
    _require(tscnc["cond_form"] in CONDITION_FORMS,
             f"tscnc.cond_form must be one of {list(CONDITION_FORMS)}, got {tscnc['cond_form']!r}")
    _require(_is_number(tscnc["kappa_target"]) and tscnc["kappa_target"] >= 1,
             f"tscnc.kappa_target must be >= 1, got {tscnc['kappa_target']!r}")

    evaluation = config["evaluation"]
    _require(_is_int(evaluation["pgd_steps"]) and evaluation["pgd_steps"] > 0,
             f"evaluation.pgd_steps must be a positive integer, got {evaluation['pgd_steps']!r}")
    for key in ("autoattack_images", "autoattack_apgd_steps", "autoattack_square_queries"):
        _require(_is_int(evaluation[key]) and evaluation[key] >= 0,
                 f"evaluation.{key} must be an integer >= 0, got {evaluation[key]!r}")
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Merge a YAML file and ``key=value`` overrides onto :data:`DEFAULT_CONFIG`, then validate."""
    config = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, Mapping):
            raise ValueError(f"config file {path} must contain a YAML mapping, got {type(loaded).__name__}")
        config = _merge(config, loaded)
    for override in overrides:
        config = _apply_override(config, override)
    return validate_config(config)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _make_readable(path: str) -> None:
    """Give a ``mkstemp`` file (created 0600) the permissions a plain ``open`` would, per the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` with ``torch.save`` to a temporary file, then move it into place.

    A crash mid-write leaves any earlier checkpoint at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    _make_readable(temporary)
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model stored by the pipeline, including structurally pruned shapes.

    Checkpoints hold only tensors and plain Python values, so they load with
    ``torch.load(weights_only=True)``, the default since torch 2.6.

    Returns:
        tuple: the model (in eval mode) and the checkpoint dict (with ``masks`` for unstructured runs).
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    model = build_model(checkpoint["model_name"], num_classes=checkpoint["num_classes"], **checkpoint["model_kwargs"])
    resize_to_state_dict(model, checkpoint["state_dict"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


# ---------------------------------------------------------------------------------------------
# training


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def find_classifier(model: nn.Module) -> nn.Module:
    """Return the last ``nn.Linear`` of ``model``, the layer kept dense and unpruned."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear classifier to keep out of pruning")
    return linears[-1]


def ignored_layers(model: nn.Module, config: dict) -> list[nn.Module]:
    """Return the layers that ``pruning.ignore_classifier`` and ``pruning.ignore_first_conv`` keep dense."""
    ignored = []
    if config["pruning"]["ignore_classifier"]:
        ignored.append(find_classifier(model))
    if config["pruning"]["ignore_first_conv"]:
        ignored.append(next(module for module in model.modules() if isinstance(module, nn.Conv2d)))
    return ignored


def _make_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float, epochs: int):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    return optimizer, scheduler


def adversarial_epochs(
    model: nn.Module,
    loader,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    eps: float,
    step_size: float,
    pgd_steps: int,
    pruner=None,
    masks: MaskSet | None = None,
    generator: torch.Generator | None = None,
    description: str = "train",
    progress: bool = True,
    clip_grad_norm: float | None = None,
) -> list[dict]:
    """Run PGD adversarial training; return per-epoch mean loss and adversarial accuracy.

    ``model`` may be wrapped in ``DistributedDataParallel``; then ``loader`` should use a
    ``DistributedSampler``. The pipeline's command line itself runs one process.

    The order inside each batch is ``loss.backward()``, ``pruner.regularize(model)`` (TSCNC
    gradients), ``masks.mask_gradients()``, clipping the total gradient norm to
    ``clip_grad_norm`` (when given), ``optimizer.step()``, ``masks.apply()``, so pruned weights
    stay exactly zero whatever the regulariser, momentum or weight decay do.
    """
    device = next(model.parameters()).device
    # The attack needs only input gradients. Under DistributedDataParallel a forward pass through
    # the wrapper expects a parameter backward to follow, so attack the wrapped module instead.
    attacked = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    history = []
    bar = tqdm(range(epochs), desc=description, disable=not progress, leave=False)
    for epoch_index in bar:
        if pruner is not None:
            pruner.update_regularizer()
        total_loss, correct, seen = 0.0, 0, 0

        batches = tqdm(loader, desc=f"epoch {epoch_index + 1}/{epochs}", disable=not progress, leave=False)
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)

            # Attack in eval mode so adversarial batches do not shift the batch-norm statistics.
            model.eval()
            adversarial = pgd_attack(attacked, images, labels, eps, step_size, pgd_steps, generator=generator)
            model.train()

            logits = model(adversarial)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if pruner is not None:
                pruner.regularize(model)
            if masks is not None:
                masks.mask_gradients()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            if masks is not None:
                masks.apply()

            total_loss += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)

        scheduler.step()
        epoch = {"loss": total_loss / max(seen, 1), "adv_train_acc": correct / max(seen, 1)}
        history.append(epoch)
        bar.set_postfix(loss=f"{epoch['loss']:.3f}", adv_acc=f"{epoch['adv_train_acc']:.3f}")
    return history


# ---------------------------------------------------------------------------------------------
# pruning and measurement


def _tscnc_pruner(model, example_inputs, config, ignored, pruning_ratio, sparsity_mode, lambda_sparse):
    from .pruner import TSCNCPruner
    import torch_pruning as tp

    tscnc = config["tscnc"]
    return TSCNCPruner(
        model,
        example_inputs,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=pruning_ratio,
        ignored_layers=ignored,
        lambda_sparse=lambda_sparse,
        lambda_cond=tscnc["lambda_cond"],
        a=tscnc["a"],
        cond_form=tscnc["cond_form"],
        kappa_target=tscnc["kappa_target"],
        sparsity=sparsity_mode,
    )


def _tscnc_ignored(ignored: list[nn.Module], mode: str) -> list[nn.Module]:
    # Structured pruning must leave the pruning-ignored layers' channels alone, so TSCNC skips them
    # too. Masks never touch those layers either, but conditioning them still helps, so the
    # unstructured mode regularises every layer.
    return ignored if mode == "structured" else []


def _structured_prune(model, example_inputs, ratio, ignored, pruner=None) -> None:
    import torch_pruning as tp

    if pruner is None:
        pruner = tp.pruner.BasePruner(
            model,
            example_inputs,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=ignored,
        )
    pruner.step()


def _spectral_norms(model: nn.Module) -> dict[str, float]:
    norms = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            groups = getattr(module, "groups", 1)
            weight = module.weight.detach().float()
            matrices = weight.reshape(groups, weight.shape[0] // groups, -1)
            norms[name] = float(torch.linalg.matrix_norm(matrices, ord=2).max())
    return norms


def measure_conditioning(model: nn.Module) -> dict:
    r"""Per-layer condition numbers, their mean log10, and log10 of the product of spectral norms.

    ``mean_log10_kappa`` averages :math:`\log_{10} \min(\kappa, 1/\epsilon_{32})` over the layers;
    ``num_capped_kappa`` counts the layers that hit the cap (kappa = inf for an exactly singular
    weight). The product of the layers' largest singular values bounds the network's Lipschitz
    constant (batch-norm scales aside).
    """
    from . import layer_condition_numbers

    kappas = {name: float(kappa) for name, kappa in layer_condition_numbers(model).items()}
    capped = [min(kappa, KAPPA_CAP) for kappa in kappas.values()]
    norms = _spectral_norms(model)
    return {
        "condition_numbers": kappas,
        "mean_log10_kappa": float(np.mean(np.log10(capped))) if capped else float("nan"),
        "num_capped_kappa": sum(kappa >= KAPPA_CAP for kappa in kappas.values()),
        "spectral_norms": norms,
        "log10_lipschitz_bound": float(sum(math.log10(max(s, 1e-30)) for s in norms.values())),
    }


def evaluate_model(model, test_images, test_labels, config, attack_it: bool = True, progress: bool = True) -> dict:
    """Return clean accuracy, PGD and AutoAttack robust accuracy (when enabled), and conditioning."""
    evaluation = config["evaluation"]
    eps, step_size = config["attack"]["eps"], config["attack"]["step_size"]
    model.eval()
    num_classes = find_classifier(model).out_features
    result = {"clean_acc": accuracy(model, test_images, test_labels, evaluation["batch_size"]),
              "num_test_images": len(test_images)}

    if attack_it:
        pgd = evaluate_pgd(model, test_images, test_labels, eps=eps, step_size=step_size,
                           steps=evaluation["pgd_steps"], restarts=evaluation["pgd_restarts"],
                           batch_size=evaluation["batch_size"], num_classes=num_classes, verbose=progress)
        result["pgd_acc"] = pgd.robust
        result["pgd_steps"] = evaluation["pgd_steps"]

        num_autoattack = min(evaluation["autoattack_images"], len(test_images))
        if num_autoattack > 0:
            # Every k-th image: the test set is ordered by class, so the subset stays balanced.
            stride = max(len(test_images) // num_autoattack, 1)
            indices = torch.arange(0, len(test_images), stride)[:num_autoattack]
            auto = evaluate_autoattack(model, test_images[indices], test_labels[indices], eps=eps,
                                       apgd_steps=evaluation["autoattack_apgd_steps"],
                                       square_queries=evaluation["autoattack_square_queries"],
                                       batch_size=evaluation["batch_size"], num_classes=num_classes)
            result["autoattack_acc"] = auto.robust
            result["autoattack_images"] = num_autoattack

    result.update(measure_conditioning(model))
    return result


# ---------------------------------------------------------------------------------------------
# the pipeline


def _arm_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _checkpoint_payload(model, config, arm, stage, ratio, masks) -> dict:
    return {
        "model_name": config["model"]["name"],
        "model_kwargs": dict(config["model"]["kwargs"]),
        "num_classes": find_classifier(model).out_features,
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "masks": masks.state_dict() if masks is not None else None,
        "arm": arm,
        "stage": stage,
        "pruning_ratio": ratio,
        "pruning_mode": config["pruning"]["mode"],
        "seed": config["seed"],
        "config_yaml": yaml.safe_dump(config),
        "torch_version": str(torch.__version__),
    }


def run_arm(arm: str, config: dict, train_set, test_images, test_labels, out_dir: Path, device) -> dict:
    """Train, prune and fine-tune one arm (``"baseline"`` or ``"tscnc"``) and evaluate each ratio."""
    seed = config["seed"]
    progress = config["progress"]
    eps, step_size = config["attack"]["eps"], config["attack"]["step_size"]
    mode = config["pruning"]["mode"]
    started = time.perf_counter()

    # Same seed for both arms: identical initial weights, batch order, crops, flips and PGD starts.
    seed_everything(seed)
    num_classes = len(train_set.classes)
    model = build_model(config["model"]["name"], num_classes=num_classes, **config["model"]["kwargs"]).to(device)
    if config["data"]["augment"]:
        train_set.transform = train_transform(seed if config["data"]["num_workers"] == 0 else None)
    loader = make_loader(train_set, config["data"]["batch_size"], shuffle=True, seed=seed,
                         num_workers=config["data"]["num_workers"])
    generator = _arm_generator(seed, device)
    example_inputs = torch.zeros(1, 3, 32, 32, device=device)

    ignored = ignored_layers(model, config)
    pruner = None
    if arm == "tscnc":
        pruner = _tscnc_pruner(model, example_inputs, config, _tscnc_ignored(ignored, mode),
                               pruning_ratio=config["pruning"]["ratios"][0],
                               sparsity_mode=mode, lambda_sparse=config["tscnc"]["lambda_sparse"])

    train = config["train"]
    optimizer, scheduler = _make_optimizer(model, train["lr"], train["momentum"], train["weight_decay"], train["epochs"])
    history = adversarial_epochs(model, loader, train["epochs"], optimizer, scheduler, eps, step_size,
                                 train["pgd_steps"], pruner=pruner, generator=generator,
                                 description=f"{arm}: adversarial training", progress=progress,
                                 clip_grad_norm=train["clip_grad_norm"])

    dense_result = evaluate_model(model, test_images, test_labels, config,
                                  attack_it=config["evaluation"]["attack_dense"], progress=progress)
    dense_result.update(sparsity_summary(model, ignored))
    dense_result["train_history"] = history
    if config["checkpoints"]:
        dense_result["checkpoint"] = str(save_checkpoint(
            out_dir / "checkpoints" / f"{arm}_dense.pt",
            _checkpoint_payload(model, config, arm, "dense", 0.0, None)))

    pruned_results = []
    for ratio in config["pruning"]["ratios"]:
        pruned_results.append(_prune_and_finetune(arm, model, ratio, config, loader, test_images, test_labels,
                                                  out_dir, device, generator))

    return {"dense": dense_result, "pruned": pruned_results, "seconds": time.perf_counter() - started}


def _prune_and_finetune(arm, dense_model, ratio, config, loader, test_images, test_labels, out_dir, device, generator):
    mode = config["pruning"]["mode"]
    finetune = config["finetune"]
    eps, step_size = config["attack"]["eps"], config["attack"]["step_size"]
    progress = config["progress"]

    model = copy.deepcopy(dense_model)
    ignored = ignored_layers(model, config)
    example_inputs = torch.zeros(1, 3, 32, 32, device=device)
    params_before = sum(p.numel() for p in model.parameters())

    pruner = None
    if arm == "tscnc":
        pruner = _tscnc_pruner(model, example_inputs, config, _tscnc_ignored(ignored, mode), pruning_ratio=ratio,
                               sparsity_mode=mode,
                               lambda_sparse=config["tscnc"]["finetune_lambda_sparse"])

    masks = None
    if mode == "unstructured":
        masks = global_magnitude_prune(model, ratio, ignored_layers=ignored, score=config["pruning"]["score"])
    else:
        _structured_prune(model, example_inputs, ratio, ignored, pruner=pruner)

    # A fresh optimizer: structured pruning replaced the parameter tensors.
    optimizer, scheduler = _make_optimizer(model, finetune["lr"], config["train"]["momentum"],
                                           config["train"]["weight_decay"], finetune["epochs"])
    history = adversarial_epochs(model, loader, finetune["epochs"], optimizer, scheduler, eps, step_size,
                                 finetune["pgd_steps"], pruner=pruner, masks=masks, generator=generator,
                                 description=f"{arm}: fine-tuning at {ratio:.0%}", progress=progress,
                                 clip_grad_norm=config["train"]["clip_grad_norm"])

    result = {"pruning_ratio": ratio, "pruning_mode": mode}
    result.update(evaluate_model(model, test_images, test_labels, config, progress=progress))
    result.update(sparsity_summary(model, ignored))
    result["parameter_sparsity"] = 1.0 - result["num_nonzero_parameters"] / params_before
    if masks is not None:
        result["mask_sparsity"] = masks.sparsity()
    result["finetune_history"] = history
    if config["checkpoints"]:
        result["checkpoint"] = str(save_checkpoint(
            out_dir / "checkpoints" / f"{arm}_{mode}_{round(ratio * 1000):04d}.pt",
            _checkpoint_payload(model, config, arm, "pruned", ratio, masks)))
    return result


def _finite_or_none(value: Any) -> Any:
    """Replace inf and NaN (an exactly singular layer has kappa = inf) by None, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    _make_readable(temporary)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(_finite_or_none(data), stream, indent=2, allow_nan=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def run_pipeline(config: dict, out_dir: str | Path) -> dict:
    """Run every arm of ``config`` and write ``results.json`` and ``robustness.png`` into ``out_dir``.

    ``results.json`` is strict JSON, so infinite values (the condition number of an exactly
    singular layer) appear there as ``null``.

    Returns:
        dict: the results, also in ``out_dir/results.json``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config["device"])
    data = config["data"]
    root = Path(data["root"]) if data["root"] else default_data_root()

    train_set = CIFAR10Folder(root, "train", max_per_class=data["train_per_class"])
    test_set = CIFAR10Folder(root, "test", max_per_class=data["test_per_class"])
    test_images, test_labels = test_set.tensors()

    results = {
        "config": config,
        "seed": config["seed"],
        "device": str(device),
        "torch_version": str(torch.__version__),
        "num_train_images": len(train_set),
        "num_test_images": len(test_set),
        "arms": {},
    }
    for arm in config["arms"]:
        results["arms"][arm] = run_arm(arm, config, train_set, test_images, test_labels, out_dir, device)

    results_path = out_dir / "results.json"
    _write_json(results_path, results)
    plot_path = plot_results(results, out_dir / "robustness.png")
    results["paths"] = {"results": str(results_path), "plot": str(plot_path)}
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m prune_tscnc.pipeline",
        description="Adversarial training, pruning and adversarial fine-tuning with and without TSCNC.",
    )
    parser.add_argument("config", help="YAML config, e.g. configs/prune_tscnc/resnet18_unstructured.yaml")
    parser.add_argument("--override", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="change one config value, e.g. train.epochs=2 or attack.eps=4/255 (repeatable)")
    parser.add_argument("--out-dir", default="outputs/prune_tscnc/pipeline",
                        help="folder for results.json, robustness.png and checkpoints/ (default: %(default)s)")
    args = parser.parse_args(argv)

    try:
        config = load_config(args.config, args.override)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    results = run_pipeline(config, args.out_dir)
    print(format_table(results))
    print(f"results: {results['paths']['results']}")
    print(f"plot:    {results['paths']['plot']}")
    return results


if __name__ == "__main__":
    main()
