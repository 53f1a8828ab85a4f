"""Property tests: random DAG CNNs, traced and pruned, must satisfy the exactness oracle.

A drawn *spec* is a list of ops over a growing list of tensors (tensor 0 is the model input):

- ("conv", src, out, k, bn, relu)   conv (+BN) (+ReLU), padding keeps the spatial size
- ("dw", src, bn, relu)             depthwise conv (groups == channels) (+BN) (+ReLU)
- ("add", a, b, relu)               residual add of two same-width tensors (+ReLU)
- ("cat", srcs)                     concat along channels (a source may repeat)
- ("split", src, sizes, chunks)     torch.split by ``sizes`` (chunks is None: its channels are
                                    blocked) or torch.chunk (pieces coupled when C % chunks == 0)
- ("gconv", src, groups, out)       grouped conv (1 < groups, groups divides both widths)
- ("shuffle", src, groups)          ShuffleNet's channel shuffle (view, transpose, view)

Every tensor nobody consumed is concatenated at the end, so each path reaches the output; the head is
flatten -> Linear, after a global average pool, after an adaptive pool to 2x2 / 3x3, or directly
on a 2x2 / 3x3 map. The module builds its layers in ``__init__`` and its ``forward`` loops over the
plain op list, which torch.fx unrolls.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from graphs import trace
from graphs.datamodel import IN, OUT
from surgery.testing.oracle import check, randomize_norms

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- the model
class SpecNet(nn.Module):
    def __init__(self, spec: dict) -> None:
        super().__init__()
        self.ops = [tuple(op) for op in spec["ops"]]
        widths = [spec["in_channels"]]
        blocks = []
        for op in self.ops:
            kind = op[0]
            if kind == "conv":
                _, src, out, k, bn, relu = op
                layers = [nn.Conv2d(widths[src], out, k, padding=k // 2)]
                layers += [nn.BatchNorm2d(out)] if bn else []
                layers += [nn.ReLU()] if relu else []
                blocks.append(nn.Sequential(*layers))
                widths.append(out)
            elif kind == "dw":
                _, src, bn, relu = op
                c = widths[src]
                layers = [nn.Conv2d(c, c, 3, padding=1, groups=c)]
                layers += [nn.BatchNorm2d(c)] if bn else []
                layers += [nn.ReLU()] if relu else []
                blocks.append(nn.Sequential(*layers))
                widths.append(c)
            elif kind == "gconv":
                _, src, groups, out = op
                blocks.append(nn.Conv2d(widths[src], out, 3, padding=1, groups=groups))
                widths.append(out)
            else:
                blocks.append(nn.Identity())  # keeps block index == op index
                if kind == "add":
                    widths.append(widths[op[1]])
                elif kind == "cat":
                    widths.append(sum(widths[s] for s in op[1]))
                elif kind == "split":
                    widths.extend(op[2])
                elif kind == "shuffle":
                    widths.append(widths[op[1]])
                else:
                    raise ValueError(kind)
        self.blocks = nn.ModuleList(blocks)
        used = {s for op in self.ops for s in _sources(op)}
        self.sinks = [i for i in range(1, len(widths)) if i not in used] or [len(widths) - 1]
        final = sum(widths[i] for i in self.sinks)
        head, size = spec["head"], spec["size"]
        if head == "gap":
            self.pool, cells = nn.AdaptiveAvgPool2d(1), 1
        elif head == "adaptive":
            self.pool, cells = nn.AdaptiveAvgPool2d(spec["pool_to"]), spec["pool_to"] ** 2
        else:  # "flat": flatten the whole (2x2 or 3x3) map
            self.pool, cells = nn.Identity(), size * size
        self.fc = nn.Linear(final * cells, spec["classes"])

    def forward(self, x):
        vals = [x]
        for i, op in enumerate(self.ops):
            kind = op[0]
            if kind in ("conv", "dw", "gconv"):
                vals.append(self.blocks[i](vals[op[1]]))
            elif kind == "shuffle":
                vals.append(channel_shuffle(vals[op[1]], op[2]))
            elif kind == "add":
                y = vals[op[1]] + vals[op[2]]
                vals.append(torch.relu(y) if op[3] else y)
            elif kind == "cat":
                vals.append(torch.cat([vals[s] for s in op[1]], dim=1))
            else:
                _, src, sizes, chunks = op
                parts = (torch.split(vals[src], list(sizes), dim=1) if chunks is None
                         else torch.chunk(vals[src], chunks, dim=1))
                for k in range(len(sizes)):
                    vals.append(parts[k])
        y = vals[self.sinks[0]] if len(self.sinks) == 1 else torch.cat(
            [vals[i] for i in self.sinks], dim=1)
        return self.fc(torch.flatten(self.pool(y), 1))


def _sources(op) -> list[int]:
    kind = op[0]
    if kind in ("conv", "dw", "split", "gconv", "shuffle"):
        return [op[1]]
    if kind == "add":
        return [op[1], op[2]]
    return list(op[1])


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """As torchvision.models.shufflenetv2.channel_shuffle: sizes computed from x.size()."""
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, -1, h, w)


def chunk_sizes(c: int, n: int) -> list[int]:
    """What torch.chunk(x, n) returns along a dim of size c (possibly fewer than n pieces)."""
    step = math.ceil(c / n)
    return [min(step, c - s) for s in range(0, c, step)]


# ----------------------------------------------------------------------------- the strategy
@st.composite
def specs(draw, max_ops: int = 8) -> dict:
    widths = [draw(st.integers(1, 4))]
    ops = []
    for _ in range(draw(st.integers(1, max_ops))):
        kind = draw(st.sampled_from(["conv", "conv", "dw", "add", "cat", "split", "gconv",
                                     "shuffle"]))
        src = draw(st.integers(0, len(widths) - 1))
        if kind == "add":
            partners = [j for j, w in enumerate(widths) if w == widths[src] and j != src]
            if partners:
                ops.append(("add", src, draw(st.sampled_from(partners)), draw(st.booleans())))
                widths.append(widths[src])
                continue
            kind = "conv_same"  # make a same-width partner, so a later add can use it
        if kind in ("conv", "conv_same"):
            base = draw(st.integers(0, len(widths) - 1))
            out = widths[src] if kind == "conv_same" else draw(st.integers(1, 8))
            ops.append(("conv", base, out, draw(st.sampled_from([1, 3])), draw(st.booleans()),
                        draw(st.booleans())))
            widths.append(out)
        elif kind == "dw":
            ops.append(("dw", src, draw(st.booleans()), draw(st.booleans())))
            widths.append(widths[src])
        elif kind == "cat":
            srcs = draw(st.lists(st.integers(0, len(widths) - 1), min_size=2, max_size=3))
            if sum(widths[s] for s in srcs) > 16:
                srcs = srcs[:1] + srcs[:1]
            ops.append(("cat", tuple(srcs)))
            widths.append(sum(widths[s] for s in srcs))
        elif kind in ("gconv", "shuffle") and widths[src] > 1:
            groups = draw(st.sampled_from([d for d in range(2, widths[src] + 1)
                                           if widths[src] % d == 0]))
            if kind == "shuffle":
                ops.append(("shuffle", src, groups))
                widths.append(widths[src])
                continue
            out = groups * draw(st.integers(1, 3))
            ops.append(("gconv", src, groups, out))
            widths.append(out)
        else:  # split (or a gconv/shuffle drawn on a single channel: a depthwise conv instead)
            c = widths[src]
            if c < 2 or kind != "split":
                ops.append(("dw", src, draw(st.booleans()), draw(st.booleans())))
                widths.append(c)
                continue
            if draw(st.booleans()):
                n = draw(st.integers(2, min(c, 4)))
                sizes, chunks = chunk_sizes(c, n), n
            else:
                cuts = sorted(draw(st.sets(st.integers(1, c - 1), min_size=1, max_size=3)))
                sizes = [b - a for a, b in zip([0] + cuts, cuts + [c])]
                chunks = None
            ops.append(("split", src, tuple(sizes), chunks))
            widths.extend(sizes)
    head = draw(st.sampled_from(["gap", "adaptive", "flat"]))
    size = draw(st.sampled_from([2, 3])) if head == "flat" else draw(st.sampled_from([4, 5, 6]))
    return {"in_channels": widths[0], "ops": ops, "head": head, "size": size,
            "pool_to": draw(st.sampled_from([2, 3])), "classes": draw(st.integers(1, 5)),
            "seed": draw(st.integers(0, 2**16)), "ratio": draw(st.floats(0.1, 0.7))}


def build(spec: dict):
    torch.manual_seed(spec["seed"])
    model = randomize_norms(SpecNet(spec).eval(), seed=spec["seed"])
    x = torch.randn(2, spec["in_channels"], spec["size"], spec["size"])
    return model, x


def check_exact(spec: dict) -> None:
    model, x = build(spec)
    c = check(model, x, spec["ratio"], seed=spec["seed"])
    assert c.removed == c.dead, f"prune must remove exactly the dead channels\n{c.graph}"
    assert c.shape_kept
    assert c.error <= 1e-4, str(c.graph)


# ----------------------------------------------------------------------------- the properties
@SETTINGS
@given(specs())
def test_random_dag_prunes_exactly_the_dead_channels(spec):
    check_exact(spec)


@SETTINGS
@given(specs())
def test_random_dag_groups_partition_every_layer_dimension(spec):
    """Each weight dimension a group touches is covered by the groups once, position by position."""
    model, x = build(spec)
    graph = trace(model, x)
    assert not graph.unsupported
    seen: dict[tuple[str, str], list[int]] = {}
    for group in graph.groups:
        assert group.channels > 0
        for m in group.members:
            assert len(m.indices) == group.channels
            seen.setdefault((m.module, m.role), []).extend(p for c in m.indices for p in c)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups == module.in_channels == module.out_channels > 1
            assert sorted(seen[(name, OUT)]) == list(range(module.out_channels))
            assert ((name, IN) in seen) is not depthwise  # depthwise: one OUT member only
            if not depthwise:  # grouped: weight dim 1 holds in_channels / groups positions
                per_group = module.in_channels // module.groups
                assert sorted(seen[(name, IN)]) == list(range(per_group))
        elif isinstance(module, nn.Linear):
            assert sorted(seen[(name, OUT)]) == list(range(module.out_features))
            assert sorted(seen[(name, IN)]) == list(range(module.in_features))
        elif isinstance(module, nn.BatchNorm2d):
            assert sorted(seen[(name, OUT)]) == list(range(module.num_features))


# ----------------------------------------------------------------------------- fixed examples
FIXED = {
    "residual": {"in_channels": 3, "ops": [("conv", 0, 4, 3, True, True),
                                            ("conv", 1, 4, 3, True, False),
                                            ("add", 1, 2, True)],
                 "head": "gap", "size": 4},
    "concat_same_twice": {"in_channels": 2, "ops": [("conv", 0, 5, 1, True, True),
                                                     ("cat", (1, 1)),
                                                     ("conv", 2, 3, 3, False, True)],
                          "head": "flat", "size": 3},
    "split_input_dw_cat": {"in_channels": 3, "ops": [("split", 0, (1, 2), None),
                                                      ("dw", 2, True, True),
                                                      ("conv", 3, 6, 1, True, True),
                                                      ("cat", (4, 1))],
                     "head": "adaptive", "size": 5, "pool_to": 2},
    "chunk_add": {"in_channels": 1, "ops": [("conv", 0, 6, 3, False, True),
                                             ("split", 1, (3, 3), 2),
                                             ("add", 2, 3, False)],
                  "head": "flat", "size": 2},
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_dag_examples(name):
    spec = {"pool_to": 2, "classes": 3, "seed": 1, "ratio": 0.5, **FIXED[name]}
    check_exact(spec)


# ----------------------------------------------------------------------------- split and chunk
SPLIT = {"in_channels": 2, "ops": [("conv", 0, 4, 1, False, False), ("split", 1, (2, 2), None)],
         "head": "gap", "size": 4, "pool_to": 2, "classes": 2, "seed": 0, "ratio": 0.5}
CHUNK = {"in_channels": 2, "ops": [("conv", 0, 4, 1, False, False), ("split", 1, (2, 2), 2),
                                   ("cat", (3, 2))],
         "head": "gap", "size": 4, "pool_to": 2, "classes": 2, "seed": 0, "ratio": 0.5}


def test_split_with_literal_sizes_of_a_prunable_tensor_is_blocked():
    """Literal sizes live in forward() and would not fit the pruned tensor: not prunable."""
    check_exact(SPLIT)
    graph = trace(*build(SPLIT))
    (conv,) = graph.groups_of("blocks.0.0")[-1:]
    assert not conv.prunable and "split splits channels into fixed sizes [2, 2]" in conv.reason
    assert "test_random_dags.py" in conv.reason  # names the user source line


def test_chunk_pieces_lose_the_same_positions():
    """chunk(2) of 4 channels: channel i is position i of both pieces, so chunk splits right."""
    check_exact(CHUNK)
    graph = trace(*build(CHUNK))
    group = next(g for g in graph.groups_of("blocks.0.0") if g.prunable)
    conv = next(m for m in group.members if m.module == "blocks.0.0")
    assert group.channels == 2 and conv.indices == ((0, 2), (1, 3))
