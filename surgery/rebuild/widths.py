"""Width attributes no forward reads (timm's ``num_features`` and kin), kept equal after
surgery to the layer width they mirror.

A timm model builds a new classifier from ``self.num_features`` (or ``head_hidden_size``,
``embed_dim``; its ``head`` module from ``in_features``, ``num_features``, ``hidden_size``) in
``reset_classifier``; no forward reads them, so the trace cannot see them as size attributes,
and after pruning the final width ``reset_classifier(5)`` built a head of the unpruned width.
Before surgery, ``width_links`` links each such int attribute of the model and of its ``head``
(when that is not itself a layer) to the first of these layer widths that equals it: the input
of the classifier (``get_classifier()``), the input or output of a layer under one of
``HEAD_LAYERS``, the output of the last other layer; after surgery ``follow_links`` sets it to
that layer's new width. A model without ``get_classifier`` (not timm's) has no links.

Example:
    >>> import timm, torch
    >>> from surgery import prune
    >>> model = timm.create_model("resnet18", num_classes=10).eval()
    >>> small = prune(model, torch.zeros(1, 3, 64, 64), ratio=0.5).model
    >>> small.num_features, small.fc.in_features
    (256, 256)
    >>> small.reset_classifier(5)
    >>> small(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 5])
"""

from __future__ import annotations

from torch import nn

from graphs.kinds import layer_kind

WIDTH_ATTRIBUTES = ("num_features", "head_hidden_size", "embed_dim", "in_features",
                    "hidden_size")
HEAD_LAYERS = ("head", "conv_head", "norm_head", "head_norm", "fc_norm", "pre_logits", "norm")
OWNERS = ("", "head")  # the model and its head module
SIDES = {"in": ("in_features", "in_channels"), "out": ("out_features", "out_channels")}

Link = tuple[str, str, str, str]  # owner, attribute, layer, side ("in" or "out")


def layer_width(layer: nn.Module, side: str) -> int | None:
    """The width of ``layer``'s input (``side="in"``) or output (``"out"``); a norm's
    channels either way; None for a module of no width.

    Example:
        >>> layer_width(nn.Linear(3, 5), "in"), layer_width(nn.LayerNorm(7), "out")
        (3, 7)
    """
    for attr in (*SIDES[side], "num_features", "num_channels"):
        value = getattr(layer, attr, None)
        if type(value) is int:
            return value
    shape = getattr(layer, "normalized_shape", None)
    return shape[-1] if isinstance(shape, tuple) and shape else None


def width_links(model: nn.Module) -> list[Link]:
    """Before surgery: (owner, attribute, layer, side) for each width attribute of ``model``
    and its head that equals one of the candidate layer widths (see the module docstring).

    Example:
        >>> import timm
        >>> width_links(timm.create_model("resnet18"))
        [('', 'num_features', 'fc', 'in'), ('', 'head_hidden_size', 'fc', 'in')]
        >>> width_links(nn.Linear(2, 2))
        []
    """
    if not callable(getattr(model, "get_classifier", None)):
        return []
    candidates = _candidates(model)
    links = []
    for owner in OWNERS:
        module = getattr(model, owner, None) if owner else model
        if not isinstance(module, nn.Module) or (owner and layer_kind(module) is not None):
            continue
        for attr in WIDTH_ATTRIBUTES:
            value = vars(module).get(attr)
            found = next((c for c in candidates if type(value) is int and
                          layer_width(model.get_submodule(c[0]), c[1]) == value), None)
            if found is not None:
                links.append((owner, attr, *found))
    return links


def _candidates(model: nn.Module) -> list[tuple[str, str]]:
    names = {id(m): n for n, m in model.named_modules()}
    classifier = model.get_classifier()
    classifiers = [names[id(c)] for c in (classifier if isinstance(classifier, tuple)
                                          else (classifier,)) if id(c) in names]
    layers = [n for n, m in model.named_modules() if n and layer_kind(m) is not None]
    found = [(n, "in") for n in classifiers if n in layers]
    found += [(n, side) for n in layers if n.split(".")[0] in HEAD_LAYERS
              and n not in classifiers for side in ("in", "out")]
    others = [n for n in layers if n not in classifiers and (n, "in") not in found]
    return found + [(n, "out") for n in others[-1:]]


def follow_links(model: nn.Module, links: list[Link]) -> nn.Module:
    """After surgery: set each linked attribute to its layer's width now; returns ``model``.
    See the module example."""
    for owner, attr, layer, side in links:
        width = layer_width(model.get_submodule(layer), side)
        if width is not None:
            setattr(model.get_submodule(owner), attr, width)
    return model


__all__ = ["HEAD_LAYERS", "WIDTH_ATTRIBUTES", "follow_links", "layer_width", "width_links"]
