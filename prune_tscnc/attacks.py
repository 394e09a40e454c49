r"""L-inf attacks: PGD in plain PyTorch for adversarial training, ART for evaluation.

Training uses :func:`pgd_attack`, projected gradient descent of Madry et al., "Towards Deep
Learning Models Resistant to Adversarial Attacks" (https://arxiv.org/abs/1706.06083):

.. math::
    x^{t+1} = \Pi_{B_\infty(x, \epsilon) \cap [0, 1]^d}
        \left(x^t + \alpha \, \mathrm{sign}(\nabla_x \mathcal{L}(f(x^t), y))\right)

Evaluation goes through the Adversarial Robustness Toolbox (ART, ``art`` 1.17 or newer):
:func:`evaluate_pgd` runs ``ProjectedGradientDescentPyTorch`` and :func:`evaluate_autoattack` runs
ART's ``AutoAttack`` with an explicit attack list (APGD-CE, APGD-DLR and Square), the untargeted
attacks of Croce and Hein's standard AutoAttack (https://arxiv.org/abs/2003.01690). ART's own
default list also runs DeepFool, an L2 minimum-norm attack, which this module leaves out.

All functions take images in [0, 1]; models are expected to normalise internally (see
:class:`prune_tscnc.models.InputNormalization`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RobustAccuracy",
    "accuracy",
    "evaluate_autoattack",
    "evaluate_pgd",
    "make_art_classifier",
    "pgd_attack",
]


def pgd_attack(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 10,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Return L-inf PGD adversarial examples that maximise the cross-entropy.

    The model's train/eval mode is left as the caller set it, and its parameter gradients are not
    touched (only the input gradient is computed).

    Args:
        model (nn.Module): classifier taking ``[batch, C, H, W]`` in [0, 1]
        images (Tensor): clean inputs ``[batch, C, H, W]`` in [0, 1]
        labels (Tensor): class indices ``[batch]``
        eps (float): L-inf radius :math:`\epsilon` (default: :obj:`8/255`)
        step_size (float): step :math:`\alpha` (default: :obj:`2/255`)
        steps (int): number of gradient steps; 0 returns the (randomly started) input
            (default: :obj:`10`)
        random_start (bool): start from a uniform point in the eps-ball (default: :obj:`True`)
        generator (torch.Generator, optional): randomness for the start, on the images' device
            (default: :obj:`None`)

    Returns:
        Tensor: adversarial images ``[batch, C, H, W]``, within ``eps`` of ``images`` and in [0, 1].
    """
    if eps < 0 or step_size <= 0:
        raise ValueError(f"PGD needs eps >= 0 and step_size > 0, got eps={eps}, step_size={step_size}")
    if steps < 0:
        raise ValueError(f"PGD steps must be >= 0, got {steps}")

    images = images.detach()
    adversarial = images.clone()
    if random_start and eps > 0:
        noise = torch.rand(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        adversarial = (adversarial + (2 * noise - 1) * eps).clamp_(0.0, 1.0)

    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = F.cross_entropy(model(adversarial), labels)
        (gradient,) = torch.autograd.grad(loss, adversarial)

        with torch.no_grad():
            adversarial = adversarial + step_size * gradient.sign()
            adversarial = torch.min(torch.max(adversarial, images - eps), images + eps).clamp_(0.0, 1.0)
    return adversarial.detach()


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Return top-1 accuracy in [0, 1] of ``model`` in eval mode on ``images`` ``[N, C, H, W]``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        predictions = model(batch).argmax(1).cpu()
        correct += int((predictions == labels[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(images), 1)


def make_art_classifier(model: nn.Module, input_shape: tuple[int, ...], num_classes: int):
    """Wrap ``model`` in ART's ``PyTorchClassifier`` with clip values (0, 1), on the model's device.

    ART runs on ``cuda:<current device>`` when the model is on a GPU and on the CPU otherwise.
    """
    from art.estimators.classification import PyTorchClassifier

    device = next(model.parameters()).device
    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


@dataclass
class RobustAccuracy:
    """Accuracy of a model on clean and adversarial copies of the same images."""

    clean: float
    robust: float
    num_images: int
    max_perturbation: float


def _robust_accuracy(model, images, labels, adversarial, eps) -> RobustAccuracy:
    adversarial = torch.as_tensor(adversarial, dtype=images.dtype)
    max_perturbation = float((adversarial - images).abs().max()) if len(images) else 0.0

    # NOTE: ART keeps AutoAttack examples only when they stay within eps; this check guards the
    # reported number against any attack that does not.
    if max_perturbation > eps + 1e-5:
        raise RuntimeError(f"attack left the eps-ball: max |delta| = {max_perturbation:.6f} > eps = {eps:.6f}")
    return RobustAccuracy(
        clean=accuracy(model, images, labels),
        robust=accuracy(model, adversarial, labels),
        num_images=len(images),
        max_perturbation=max_perturbation,
    )


def evaluate_pgd(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = 8 / 255,
    step_size: float = 2 / 255,
    steps: int = 20,
    restarts: int = 1,
    batch_size: int = 128,
    num_classes: int = 10,
    verbose: bool = False,
) -> RobustAccuracy:
    r"""Measure PGD robust accuracy with ART's ``ProjectedGradientDescentPyTorch``.

    Args:
        model (nn.Module): classifier taking inputs in [0, 1]
        images (Tensor): ``[N, C, H, W]`` in [0, 1], on any device
        labels (Tensor): ``[N]`` true classes (the attack uses them, so no label leaking)
        eps (float): L-inf radius (default: :obj:`8/255`)
        step_size (float): step size (default: :obj:`2/255`)
        steps (int): iterations, 20 for PGD-20 (default: :obj:`20`)
        restarts (int): random starts; 1 starts once from a random point (default: :obj:`1`)
        batch_size (int): attack batch size (default: :obj:`128`)
        num_classes (int): number of classes (default: :obj:`10`)
        verbose (bool): show ART's progress bar (default: :obj:`False`)
    """
    from art.attacks.evasion import ProjectedGradientDescentPyTorch

    if steps <= 0 or restarts <= 0:
        raise ValueError(f"PGD evaluation needs steps > 0 and restarts > 0, got steps={steps}, restarts={restarts}")
    images, labels = images.detach().cpu().float(), labels.detach().cpu()
    classifier = make_art_classifier(model, tuple(images.shape[1:]), num_classes)
    attack = ProjectedGradientDescentPyTorch(
        classifier,
        norm=np.inf,
        eps=eps,
        eps_step=step_size,
        max_iter=steps,
        num_random_init=restarts,
        batch_size=batch_size,
        verbose=verbose,
    )
    adversarial = attack.generate(images.numpy(), y=labels.numpy())
    return _robust_accuracy(model, images, labels, adversarial, eps)


def evaluate_autoattack(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float = 8 / 255,
    apgd_steps: int = 100,
    apgd_restarts: int = 1,
    square_queries: int = 5000,
    batch_size: int = 128,
    num_classes: int = 10,
    verbose: bool = False,
) -> RobustAccuracy:
    r"""Measure robust accuracy under ART's ``AutoAttack`` with APGD-CE, APGD-DLR and Square.

    An image counts as robust only if all three attacks fail on it. The standard Croce-Hein
    setting is ``apgd_steps=100`` and ``square_queries=5000``. Smaller values give a cheaper,
    weaker attack, so the reported accuracy is then an upper bound on the standard one.

    Args:
        model (nn.Module): classifier taking inputs in [0, 1]
        images (Tensor): ``[N, C, H, W]`` in [0, 1]
        labels (Tensor): ``[N]`` true classes
        eps (float): L-inf radius (default: :obj:`8/255`)
        apgd_steps (int): iterations of each APGD attack (default: :obj:`100`)
        apgd_restarts (int): random restarts of each APGD attack (default: :obj:`1`)
        square_queries (int): query budget of the Square attack (default: :obj:`5000`)
        batch_size (int): attack batch size (default: :obj:`128`)
        num_classes (int): number of classes (default: :obj:`10`)
        verbose (bool): show ART's progress bars (default: :obj:`False`)
    """
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack

    if apgd_steps <= 0 or apgd_restarts <= 0 or square_queries <= 0:
        raise ValueError(
            f"AutoAttack needs positive budgets, got apgd_steps={apgd_steps}, apgd_restarts={apgd_restarts}, "
            f"square_queries={square_queries}"
        )
    images, labels = images.detach().cpu().float(), labels.detach().cpu()
    classifier = make_art_classifier(model, tuple(images.shape[1:]), num_classes)

    # APGD's initial step is 2 * eps, as in Croce and Hein; ART's eps_step sets it.
    attacks = [
        AutoProjectedGradientDescent(
            classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=apgd_steps,
            nb_random_init=apgd_restarts, batch_size=batch_size, loss_type=loss_type, verbose=verbose,
        )
        for loss_type in ("cross_entropy", "difference_logits_ratio")
    ]
    attacks.append(
        SquareAttack(
            classifier, norm=np.inf, eps=eps, max_iter=square_queries, p_init=0.8, nb_restarts=1,
            batch_size=batch_size, verbose=verbose,
        )
    )
    auto_attack = AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, attacks=attacks, batch_size=batch_size)
    adversarial = auto_attack.generate(images.numpy(), y=labels.numpy())
    return _robust_accuracy(model, images, labels, adversarial, eps)
