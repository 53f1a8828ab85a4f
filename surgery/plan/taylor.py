"""First-order Taylor importance: how much the loss would change if a channel were removed.

``taylor(model, batches)`` runs the model on a few ``(x, y)`` batches, accumulates
``|w * dL/dw|`` of every parameter (one batch at a time, so signs do not cancel across batches),
and returns a criterion ``(model, group) -> Tensor[C]`` for ``prune(importance=...)``: per
channel, the sum over the group's members (producers' filters and biases, norms, consumers'
input slices) of the accumulated saliency. The model is scored in eval mode (BatchNorm
statistics untouched) and its ``.grad`` fields are not used or changed.

Example:
    >>> import torch
    >>> from surgery import prune
    >>> from surgery.io.models import LeNet
    >>> model = LeNet()
    >>> batches = [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))]
    >>> result = prune(model, torch.zeros(1, 1, 28, 28), ratio=0.5,
    ...                importance=taylor(model, batches))
    >>> result.plan.importance, result.model.conv1.out_channels
    ('taylor', 3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice

import torch
from torch import Tensor, nn

from graphs.inputs import call_model
from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.plan.importance import Criterion
from surgery.plan.saliency import criterion

LossFn = Callable[[Tensor, Tensor], Tensor]


def taylor(model: nn.Module, batches: Iterable, loss_fn: LossFn | None = None,
           max_batches: int | None = None) -> Criterion:
    """A Taylor criterion for ``model`` from ``batches`` of ``(inputs, targets)``.

    ``loss_fn(output, targets)`` defaults to cross-entropy; ``max_batches`` caps how many
    batches are read. The criterion must be used on the same ``model`` (it looks up saliency
    by parameter name).
    """
    saliency = taylor_saliency(model, batches, loss_fn, max_batches)

    return criterion(saliency, "taylor")  # per channel: the sum over its members' weights


def taylor_saliency(model: nn.Module, batches: Iterable, loss_fn: LossFn | None = None,
                    max_batches: int | None = None) -> dict[str, Tensor]:
    """Parameter name -> sum over batches of ``|w * dL/dw|`` (float64, same shape as w).

    Example:
        >>> from surgery.io.models import LeNet
        >>> s = taylor_saliency(LeNet(), [(torch.randn(4, 1, 28, 28), torch.arange(4))])
        >>> s["fc3.weight"].shape, bool((s["fc3.weight"] >= 0).all())
        (torch.Size([10, 84]), True)
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in named}
    seen = 0
    with eval_mode(model), torch.enable_grad():
        for inputs, targets in islice(batches, max_batches):
            loss = loss_fn(call_model(model, inputs), targets)
            grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            for (name, p), g in zip(named, grads):
                if g is not None:
                    total[name] += (p.detach() * g).abs().double()
            seen += 1
    if seen == 0:
        raise SurgeryError("taylor importance needs at least one (inputs, targets) batch")
    return total
