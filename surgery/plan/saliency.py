"""Per-weight saliency accumulated over training steps, and the channel criterion it gives.

An accumulator reads each parameter's ``.grad`` after a backward pass (``update(model)``) and adds
a per-weight saliency (float64, the parameter's shape) to a running total keyed by parameter
name. ``criterion(totals, name)`` turns the totals into a ``(model, group) -> Tensor[C]``
criterion for ``prune()``: per channel, the sum over the group's members (producers' filters and
biases, norms, consumers' input slices) of the saliency of the weights that channel owns.

ACCUMULATORS (name -> class):

- ``seven``: SEVEN's gradient-noise-aware score ``|w * g * m_hat / (sqrt(v_hat) + eps)|``, with
  ``m`` and ``v`` bias-corrected exponential moving averages of ``|g|`` and ``g**2`` (betas 0.9,
  0.999): weights whose gradient is consistent across steps (low noise) count more;
- ``taylor``: first-order Taylor ``|w * g|`` (at initialisation this is SNIP's connection
  sensitivity, summed per channel);
- ``hessian``: ``0.5 * w**2 * g**2``, the diagonal Hessian approximated by squared (batch)
  gradients, as torch-pruning's HessianImportance (it squares per-sample gradients).

``accumulate(model, batches, name)`` scores a model on a few batches without training it
(``surgery.recover.at_init.prune_at_init`` prunes from such scores: SEVENpre).

Example:
    >>> import torch
    >>> from surgery.io.models import LeNet
    >>> model = LeNet()
    >>> totals = accumulate(model, [(torch.randn(8, 1, 28, 28), torch.arange(8))], "seven")
    >>> totals["conv1.weight"].shape, bool((totals["conv1.weight"] >= 0).all())
    (torch.Size([6, 1, 5, 5]), True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from types import MappingProxyType

import torch
from torch import Tensor, nn

from graphs.datamodel import OUT, SIZE, Group, Member
from graphs.inputs import call_model
from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.plan.importance import Criterion

LossFn = Callable[[Tensor, Tensor], Tensor]


class Accumulator:
    """Running per-weight totals; subclasses define ``saliency(name, w, g)``."""

    def __init__(self) -> None:
        self.totals: dict[str, Tensor] = {}
        self.steps = 0

    def saliency(self, name: str, w: Tensor, g: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, model: nn.Module) -> None:
        """Add the saliency of every parameter that has a ``.grad`` (float64)."""
        self.steps += 1
        for name, p in model.named_parameters():
            if p.grad is not None:
                s = self.saliency(name, p.detach().double(), p.grad.detach().double())
                self.totals[name] = self.totals[name] + s if name in self.totals else s

    def map_tensors(self, fn: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> None:
        """Replace every name -> tensor dict held (totals, moving averages) by ``fn(dict)``:
        after a prune, ``fn`` slices them to the new parameter shapes."""
        self.totals = fn(self.totals)

    def reset(self) -> None:
        """Zero the totals (moving averages, if any, are kept)."""
        self.totals = {}


class Taylor(Accumulator):
    def saliency(self, name: str, w: Tensor, g: Tensor) -> Tensor:
        return (w * g).abs()


class Hessian(Accumulator):
    def saliency(self, name: str, w: Tensor, g: Tensor) -> Tensor:
        return 0.5 * (w * g).pow(2)


class Seven(Accumulator):
    """``|w * g * m_hat / (sqrt(v_hat) + eps)|``; m, v: moving averages of |g| and g**2."""

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        self.betas, self.eps = betas, eps
        self.m: dict[str, Tensor] = {}
        self.v: dict[str, Tensor] = {}

    def saliency(self, name: str, w: Tensor, g: Tensor) -> Tensor:
        b1, b2 = self.betas
        self.m[name] = b1 * self.m.get(name, torch.zeros_like(g)) + (1 - b1) * g.abs()
        self.v[name] = b2 * self.v.get(name, torch.zeros_like(g)) + (1 - b2) * g * g
        m_hat = self.m[name] / (1 - b1 ** self.steps)
        v_hat = self.v[name] / (1 - b2 ** self.steps)
        return (w * g * m_hat / (v_hat.sqrt() + self.eps)).abs()

    def map_tensors(self, fn: Callable[[dict[str, Tensor]], dict[str, Tensor]]) -> None:
        self.totals, self.m, self.v = fn(self.totals), fn(self.m), fn(self.v)


ACCUMULATORS: Mapping[str, type[Accumulator]] = MappingProxyType(
    {"seven": Seven, "taylor": Taylor, "hessian": Hessian})


def make_accumulator(name: str) -> Accumulator:
    """A fresh accumulator for ``name`` (a key of ACCUMULATORS)."""
    if name not in ACCUMULATORS:
        raise SurgeryError(f"unknown accumulated importance {name!r}: choose one of "
                           f"{', '.join(sorted(ACCUMULATORS))}")
    return ACCUMULATORS[name]()


def criterion(totals: Mapping[str, Tensor], name: str = "saliency") -> Criterion:
    """A ``(model, group) -> Tensor[C]`` criterion summing ``totals`` over each channel's weights.

    Example:
        >>> from graphs import trace
        >>> from surgery.io.models import LeNet
        >>> model = LeNet()
        >>> ones = {n: torch.ones_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
        >>> group = trace(model, torch.zeros(1, 1, 28, 28)).prunable[0]  # conv1 out, conv2 in
        >>> criterion(ones)(model, group).tolist()  # 25 weights + 1 bias + 16 * 25 weights
        [426.0, 426.0, 426.0, 426.0, 426.0, 426.0]
    """
    def score(model: nn.Module, group: Group) -> Tensor:
        scores = torch.zeros(group.channels, dtype=torch.float64)
        for m in (m for m in group.members if m.role != SIZE):  # a SIZE member has no tensor
            index = torch.tensor(m.indices, dtype=torch.long)
            for param in _named(m):
                s = totals.get(f"{m.module}.{param}" if m.module else param)
                if s is None or s.dim() <= m.dim or (param == "bias" and m.dim != 0):
                    continue
                dims = [d for d in range(s.dim()) if d != m.dim]
                per_position = s.sum(dim=dims) if dims else s
                scores += per_position[index].sum(dim=1)
        return scores

    score.__name__ = name
    return score


def _named(member: Member) -> tuple[str, ...]:
    """The parameters a member's channels index: the one it names (``attr``: a layer scale,
    GPT-2 Conv1D's weight), else the layer's weight and, for its output dim, its bias."""
    if member.attr:
        return (member.attr,)
    return ("weight", "bias") if member.role == OUT else ("weight",)


def accumulate(model: nn.Module, batches: Iterable, name: str = "seven", *,
               loss_fn: LossFn | None = None, max_batches: int | None = None
               ) -> dict[str, Tensor]:
    """Parameter name -> saliency ``name`` accumulated over ``batches`` of ``(inputs, targets)``.

    The model is scored in eval mode and not trained; its ``.grad`` fields are restored.
    """
    loss_fn = loss_fn or nn.functional.cross_entropy
    acc = make_accumulator(name)
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    try:
        with eval_mode(model), torch.enable_grad():
            for inputs, targets in islice(batches, max_batches):
                grads = torch.autograd.grad(loss_fn(call_model(model, inputs), targets), params,
                                            allow_unused=True)
                for p, g in zip(params, grads):
                    p.grad = g
                acc.update(model)
    finally:
        for p, g in zip(params, saved):
            p.grad = g
    if acc.steps == 0:
        raise SurgeryError(f"importance {name!r} needs at least one (inputs, targets) batch")
    return acc.totals
