"""Knowledge distillation while fine-tuning a pruned model: the dense model teaches.

The loss (Hinton et al. 2015) mixes the KL divergence between temperature-softened teacher and
student distributions (scaled by T**2 so its gradients keep their size as T changes) with the
ordinary cross-entropy on the labels:
``alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)``.

``distill_loss(teacher)`` gives a ``loss_fn(logits, labels, inputs)`` for
``surgery.recover.train``'s ``loss_fn=`` keyword; ``finetune_distilled`` is ``finetune`` with
it. The teacher runs in eval mode without gradients and is never changed.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
    >>> round(float(distillation_loss(s, s, y, temperature=2.0, alpha=1.0)), 6)  # KL(p||p) = 0
    0.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from surgery.errors import SurgeryError
from surgery.recover.train import finetune

DistillLoss = Callable[[Tensor, Tensor, Tensor], Tensor]


def distillation_loss(student: Tensor, teacher: Tensor, labels: Tensor, *,
                      temperature: float = 4.0, alpha: float = 0.5) -> Tensor:
    """``alpha * T**2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    Example:
        >>> s, t = torch.zeros(1, 2), torch.tensor([[0.0, 10.0]])  # teacher ~ (0.00005, 0.99995)
        >>> # 0.5 * KL = 0.5 * (log 2 - H(teacher)) = 0.34613; 0.5 * CE = 0.5 * log 2 = 0.34657
        >>> round(float(distillation_loss(s, t, torch.tensor([1]), temperature=1.0)), 4)
        0.6929
    """
    _check(temperature, alpha)
    soft_teacher = F.log_softmax(teacher.detach() / temperature, dim=1)
    soft_student = F.log_softmax(student / temperature, dim=1)
    kl = F.kl_div(soft_student, soft_teacher, reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(student, labels)


def distill_loss(teacher: nn.Module, *, temperature: float = 4.0,
                 alpha: float = 0.5) -> DistillLoss:
    """``loss_fn(logits, labels, inputs)`` for ``surgery.recover.train.train(loss_fn=...)``.

    Example:
        >>> from surgery.io.models import LeNet
        >>> loss_fn = distill_loss(LeNet(), alpha=0.0)  # alpha 0: cross-entropy only
        >>> x, y = torch.zeros(2, 1, 28, 28), torch.tensor([0, 1])
        >>> bool(loss_fn(torch.zeros(2, 10), y, x) == F.cross_entropy(torch.zeros(2, 10), y))
        True
    """
    _check(temperature, alpha)
    teacher.eval()

    def loss_fn(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            target = teacher(inputs)
        return distillation_loss(logits, target, labels, temperature=temperature, alpha=alpha)

    return loss_fn


def finetune_distilled(model: nn.Module, teacher: nn.Module, loader: Any, *,
                       temperature: float = 4.0, alpha: float = 0.5,
                       **train_options: Any) -> nn.Module:
    """Fine-tune ``model`` in place with the dense ``teacher``; keywords as ``finetune``.

    Example:
        >>> from surgery import prune
        >>> from surgery.io.models import LeNet
        >>> teacher = LeNet()
        >>> student = prune(teacher, torch.zeros(1, 1, 28, 28), ratio=0.5).model
        >>> data = [(torch.randn(8, 1, 28, 28), torch.arange(8))]
        >>> finetune_distilled(student, teacher, data, progress=False) is student
        True
    """
    loss_fn = distill_loss(teacher, temperature=temperature, alpha=alpha)
    return finetune(model, loader, loss_fn=loss_fn, **train_options)


def _check(temperature: float, alpha: float) -> None:
    if not temperature > 0:
        raise SurgeryError(f"temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise SurgeryError(f"alpha must be in [0, 1], got {alpha}")
