"""Train, fine-tune and evaluate classifiers (the accuracy side of pruning).

``train`` trains a model in place with cross-entropy; ``finetune`` is the same loop, meant
for a pruned model: pass the pruning masks so pruned weights stay exactly zero. Both are
deterministic for a given ``seed`` on CPU. Under ``torchrun`` (when ``torch.distributed``
is initialised) the loop wraps the model in ``DistributedDataParallel`` and shards the
training data with a ``DistributedSampler``; the same script runs unchanged.

Example:
    >>> from surgery.recover.data import load_mnist, loaders
    >>> from surgery.io.models import LeNet
    >>> train_loader, test_loader = loaders(load_mnist(), batch_size=64)
    >>> _ = torch.manual_seed(0)  # the initial weights
    >>> model = train(LeNet(), train_loader, epochs=1, progress=False)
    >>> evaluate(model, test_loader) > 0.8
    True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from graphs.modes import eval_mode
from surgery.errors import SurgeryError
from surgery.progress import OFF, Progress, resolve
from surgery.recover.sparsity import apply_masks

DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}


def evaluate(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy in ``[0, 1]`` over ``loader``; restores the model's training flag.

    Example:
        >>> from surgery.recover.data import load_mnist, loaders
        >>> from surgery.io.models import LeNet
        >>> _, test_loader = loaders(load_mnist())
        >>> 0.0 <= evaluate(LeNet(), test_loader) <= 1.0
        True
    """
    device = _device_of(model)
    correct = total = 0
    with eval_mode(model), torch.inference_mode():
        for images, labels in loader:
            logits = model(images.to(device))
            correct += int((logits.argmax(dim=1) == labels.to(device)).sum())
            total += labels.numel()
    if total == 0:
        raise SurgeryError("cannot evaluate on an empty loader")
    return correct / total


def train(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int = 1,
    lr: float | None = None,
    optimizer: str = "sgd",
    seed: int = 0,
    progress: bool | str | None = None,
    masks: dict[str, Tensor] | None = None,
    loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy and return it.

    ``optimizer``: ``"sgd"`` (momentum 0.9, default lr 0.05) or ``"adam"`` (default lr 1e-3).
    ``masks`` (parameter name -> 0/1 tensor) are applied before training and after every
    optimiser step, so masked weights stay exactly zero. ``seed`` goes to ``torch.manual_seed``.
    ``progress``: None (default) draws a bar per epoch when stderr is a terminal and else
    prints one line per epoch (its mean loss and the time elapsed); True: bars, False: nothing,
    or ``"bar"``, ``"lines"``, ``"off"`` (``surgery.progress``). Only rank 0 shows progress.
    Under torch.distributed (N processes) each rank trains on its 1/N shard of the data with
    batches of ``loader.batch_size // N`` (``rank_batch_size``): every step averages the
    gradient over ``loader.batch_size`` images as one process does, and an epoch has the same
    number of steps, so the same epochs and learning rate give the same accuracy.
    ``loss_fn(logits, labels, images)`` replaces cross-entropy (e.g. ``surgery.distill``).

    Example:
        >>> from surgery.recover.data import load_mnist, loaders
        >>> from surgery.io.models import LeNet
        >>> masks = {"fc3.weight": torch.zeros(10, 84)}
        >>> model = train(LeNet(), loaders(load_mnist())[0], progress=False, masks=masks)
        >>> int(model.fc3.weight.count_nonzero())
        0
    """
    if epochs < 1:
        raise SurgeryError(f"epochs must be a positive integer, got {epochs}")
    opt = _make_optimizer(model, optimizer, lr)
    torch.manual_seed(seed)
    apply_masks(model, masks or {})
    net, loader, sampler = _maybe_distributed(model, loader, seed)
    rank0 = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    log = Progress(resolve(progress) if rank0 else OFF)
    with _train_mode(model):
        for epoch in range(epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)  # reshuffle the shards
            step = f"epoch {epoch + 1}/{epochs}"
            batches, loss = _run_epoch(net, model, opt, masks,
                                       log.bar(loader, step, unit="batch"), loss_fn)
            log.line(f"{step}: {batches} batches, mean loss {loss:.4f}")
    return model


def finetune(
    model: nn.Module, loader: DataLoader, *, masks: dict[str, Tensor] | None = None, **kwargs
) -> nn.Module:
    """Fine-tune a pruned model: exactly ``train`` (same keywords), named for intent.

    Pass the masks of unstructured pruning so the zeros survive; structurally pruned
    models (smaller layers) need no masks.

    Example:
        >>> from surgery.recover.data import load_mnist, loaders
        >>> from surgery.recover.sparsity import magnitude_masks
        >>> from surgery.io.models import LeNet
        >>> train_loader, _ = loaders(load_mnist(), batch_size=256)
        >>> model = LeNet()
        >>> masks = magnitude_masks(model, {"fc1": 0.9})
        >>> model = finetune(model, train_loader, masks=masks, progress=False)
        >>> int((model.fc1.weight == 0).sum())
        27648
    """
    return train(model, loader, masks=masks, **kwargs)


def _run_epoch(net, model, opt, masks, batches, loss_fn=None) -> tuple[int, float]:
    """One pass over ``batches``; ``net`` is ``model`` or its DDP wrapper. Returns the number
    of batches and their mean loss."""
    device = _device_of(model)
    cross_entropy = nn.CrossEntropyLoss()
    count, total = 0, torch.zeros(())
    for images, labels in batches:
        opt.zero_grad(set_to_none=True)
        images, labels = images.to(device), labels.to(device)
        logits = net(images)
        loss = cross_entropy(logits, labels) if loss_fn is None else \
            loss_fn(logits, labels, images)
        loss.backward()
        opt.step()
        if masks:
            apply_masks(model, masks)
        count, total = count + 1, total + loss.detach()  # no sync with the device per batch
        if isinstance(batches, tqdm):
            batches.set_postfix(loss=f"{loss.item():.4f}")
    return count, float(total) / max(count, 1)


def _make_optimizer(model: nn.Module, name: str, lr: float | None) -> torch.optim.Optimizer:
    if name not in DEFAULT_LR:
        raise SurgeryError(f"unknown optimizer {name!r}; use one of {sorted(DEFAULT_LR)}")
    lr = DEFAULT_LR[name] if lr is None else lr
    if not lr > 0:
        raise SurgeryError(f"learning rate must be positive, got {lr}")
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def _maybe_distributed(model: nn.Module, loader: DataLoader, seed: int):
    """Under torch.distributed: (DDP(model), sharded loader, sampler); else unchanged."""
    if not (dist.is_available() and dist.is_initialized()):
        return model, loader, None
    sampler = DistributedSampler(loader.dataset, shuffle=True, seed=seed)
    sharded = DataLoader(
        loader.dataset,
        batch_size=rank_batch_size(loader.batch_size, dist.get_world_size()),
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
    )
    device = _device_of(model)
    device_ids = [device] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids), sharded, sampler


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Per-process batch under DDP so that N processes together take ``batch_size`` per step.

    Example:
        >>> rank_batch_size(64, 1), rank_batch_size(64, 2), rank_batch_size(64, 3)
        (64, 32, 21)
    """
    if batch_size < world_size:
        raise SurgeryError(f"batch size {batch_size} is smaller than the {world_size} "
                           f"processes: use --batch-size {world_size} or more")
    return batch_size // world_size


def split_note(batch_size: int, world_size: int, images: int) -> str:
    """How DDP splits an epoch, in words (printed by ``surgery finetune`` on rank 0).

    Example:
        >>> print(split_note(64, 2, 4000))
        DDP: 2 processes, each trains on 1/2 of the 4,000 images per epoch in batches of 32: every step averages 64 images, as one process does, so epochs and accuracy compare.
    """
    per_rank = rank_batch_size(batch_size, world_size)
    return (f"DDP: {world_size} processes, each trains on 1/{world_size} of the {images:,} "
            f"images per epoch in batches of {per_rank}: every step averages "
            f"{per_rank * world_size} images, as one process does, so epochs and accuracy "
            f"compare.")


@contextmanager
def distributed_from_env() -> Iterator[int]:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) join the process group for
    the block (gloo on CPU, nccl on CUDA) and leave it after; yields this process's rank.

    Outside torchrun, or when a group is already initialised, it does nothing and yields the
    current rank (0 when not distributed).

    Example:
        >>> with distributed_from_env() as rank:
        ...     rank
        0
    """
    owns = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield dist.get_rank() if dist.is_initialized() else 0
    finally:
        if owns:
            dist.destroy_process_group()


@contextmanager
def _train_mode(model: nn.Module) -> Iterator[None]:
    """Training mode for the block (``graphs.trace.eval_mode``'s counterpart), then every
    module's previous flag back."""
    flags = {m: m.training for m in model.modules()}
    model.train()
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
