"""``torch.einsum``: channels follow their subscript letter.

The equation (``"bhid,bhjd->bhij"``; ``...`` and an implicit output allowed) names every dim of
every operand. An operand's channels sit on one of its letters:

* a letter the output keeps: the channels pass to its position there, coupled across every
  operand holding that letter (q's and k's heads in ``bhid,bhjd->bhij``, attn's and v's in
  ``bhij,bhjd->bhid``). An operand holding the letter without channels on it, longer than 1
  there, blocks them: it would not be sliced.
* a letter summed away: every operand holding it must carry channels on it; they are coupled
  and leave the output (``bnc,dc->bnd`` with a bare weight ``(d, c)``): exact, a dead channel
  adds 0 to the sum. A letter with channels on one operand only, summed away, blocks them
  (a router's weights over the experts), and the other letters go on.

Two kept letters with channels (an outer product) and a repeated channel letter (a diagonal)
are reported. No MAC site is recorded: the MAC model keeps an einsum at its dense count.

Example:
    >>> import torch
    >>> from graphs import trace
    >>> class Heads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_heads, self.qk, self.proj = 2, torch.nn.Linear(8, 16), torch.nn.Linear(10, 8)
    ...     def forward(self, x):  # (batch, 5 tokens, 8)
    ...         q, k = self.qk(x).unflatten(-1, (2, self.num_heads, 4)).permute(2, 0, 3, 1, 4)
    ...         attn = torch.einsum("bhid,bhjd->bhij", q, k)
    ...         return self.proj(attn.transpose(1, 2).flatten(2))
    >>> heads = next(g for g in trace(Heads(), torch.zeros(1, 5, 8)).prunable if g.channels == 2)
    >>> [m.short() for m in heads.members]
    ['qk.out x8', 'num_heads.size', 'proj.in x5']
"""

from __future__ import annotations

from torch import fx

from graphs.channels import Flow
from graphs.context import TraceContext
from graphs.errors import Refused
from graphs.sources import at_source


def parse(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """Subscripts of each operand (of rank ``ranks[i]``) and of the output, each ``...`` spelled
    out as digits (aligned from the right, as einsum broadcasts them).

    Example:
        >>> parse("bhid,bhjd->bhij", [4, 4])
        (['bhid', 'bhjd'], 'bhij')
        >>> parse("...c,dc", [3, 2])
        (['01c', 'dc'], '01d')
    """
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != len(ranks):
        raise Refused(f"{len(terms)} subscripts for {len(ranks)} operands")
    spans = [rank - len(t.replace("...", "")) for t, rank in zip(terms, ranks)]
    ellipsis = max((n for t, n in zip(terms, spans) if "..." in t), default=0)
    digits = "".join(str(i) for i in range(ellipsis))
    terms = [t.replace("...", digits[ellipsis - n:]) for t, n in zip(terms, spans)]
    if ellipsis > 10 or any(len(t) != rank for t, rank in zip(terms, ranks)):
        raise Refused("subscripts that do not fit the operands")
    if not arrow:
        letters = "".join(terms)
        output = "..." + "".join(sorted(c for c in set(letters) if c.isalpha()
                                        and letters.count(c) == 1))
    return terms, output.replace("...", digits)


def einsum(ctx: TraceContext, node: fx.Node) -> Flow | None:
    """The flow of ``torch.einsum(equation, *operands)`` (see the module docstring)."""
    equation, operands = _call(node)
    flows = [ctx.flow(o) for o in operands]
    if all(f is None for f in flows):
        return None
    shapes = [ctx.shape(o) for o in operands]
    if equation is None or None in shapes:
        raise Refused("an equation or operands that cannot be read")
    terms, output = parse(equation, [len(s) for s in shapes])
    letters = dict.fromkeys(terms[i][f.dim] for i, f in enumerate(flows) if f is not None)
    if sum(c in output for c in letters) > 1:
        raise Refused("operands carry channels on two letters that the output keeps")
    found = None
    for letter in letters:
        tracked = _couple(ctx, node, letter, terms, flows, shapes, letter in output)
        found = Flow(tracked.ids, output.index(letter)) if letter in output else found
    return found


def _couple(ctx: TraceContext, node: fx.Node, letter: str, terms: list[str], flows: list,
            shapes: list, kept: bool) -> Flow:
    """Couple the channels every operand carries on ``letter``; the first of them."""
    if any(t.count(letter) > 1 for t in terms):
        raise Refused(f"channels on a repeated subscript {letter!r}")
    holders = [(i, t.index(letter)) for i, t in enumerate(terms) if letter in t]
    tracked = [flows[i] for i, at in holders if flows[i] is not None and flows[i].dim == at]
    others = [(i, at) for i, at in holders if flows[i] is None or flows[i].dim != at]
    if not kept and (others or len(tracked) < 2):  # e.g. router weights over the experts:
        for f in tracked:  # those channels stay; the operands' other letters go on
            ctx.sets.block(f.ids, f"einsum at node {node.name} sums channels on {letter!r} "
                                  f"with an operand carrying none there{at_source(node)}")
        return tracked[0]
    for f in tracked[1:]:
        ctx.sets.union(tracked[0].ids, f.ids)
    if any(shapes[i][at] > 1 for i, at in others):
        ctx.sets.block(tracked[0].ids, f"einsum at node {node.name} mixes channels with an "
                                       f"untracked tensor")
    return tracked[0]


def _call(node: fx.Node) -> tuple[str | None, list]:
    """(equation, operands) of ``einsum(eq, a, b)`` or ``einsum(eq, [a, b])``; (None, the
    tensors) for the sublist form."""
    equation = node.args[0] if node.args else node.kwargs.get("equation")
    rest = list(node.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not isinstance(equation, str):
        return None, list(node.all_input_nodes)
    return equation, rest
