"""Capture a model's real forward as an fx.Graph, with a torch-function mode (torch.overrides).

The model runs once on the example inputs, so shape-dependent ``if``s, loops over lists and
Hugging Face models run as they do for the user. ``Recorder`` (a ``TorchFunctionMode``) sees
every torch function and tensor method at the level users write them (``F.conv2d``,
``F.batch_norm``, ``Tensor.view``, ``+``), and records each call as a node of an ``fx.Graph``:
``call_function`` (target: the function) or ``call_method`` (target: the method name). Tensors
that no recorded call produced are model inputs (``placeholder``), parameters and buffers
(``get_attr``, target: the qualified name under which the model registers them) or constants.
Modules are transparent: their functional calls are recorded with their own parameters.
Modules that ``leaf(module)`` accepts (attention layers with a rule of their own) are recorded
as one ``call_module`` node, and what runs inside them is not recorded.

Sizes read from a tensor (``x.shape``, ``x.size(1)``) are ``SizeInt`` (``graphs.size_ints``):
ints that remember the node they came from, so that a later ``view``/``reshape`` shows whether a
size was read from a tensor (it follows the pruned width) or written as a literal (it would
not); a size made a float (``C ** -0.5``, ``math.sqrt(C)``) is recorded as a ``float`` node.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten())
    >>> graph = capture(model, torch.zeros(1, 3, 5, 5)).graph
    >>> [n.op for n in graph.nodes]
    ['placeholder', 'get_attr', 'get_attr', 'call_function', 'call_function', 'call_method', \
'output']
"""

from __future__ import annotations

import operator
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphs.errors import TraceError
from graphs.fastconv import batch_norm_view, fast_call
from graphs.inputs import split_inputs
from graphs.modes import eval_runner
from graphs.size_ints import SizeInt
from graphs.sources import innermost_user_frame, user_frame_of, user_source
from graphs.torch_names import method_name, property_name

_SIZE_METHOD = torch.Tensor.size
_VALUE_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__"}
_CAPTURE_LOCK = threading.Lock()  # hooks on a shared model and torch's mode stack: one at a time


@dataclass
class Capture:
    """The recorded graph; ``params`` maps each get_attr target to the tensor it names; ``notes``
    say where the forward branched on tensor values (the graph is the path these inputs took)."""

    graph: fx.Graph
    params: dict[str, torch.Tensor]
    notes: tuple[str, ...] = ()


def capture(model: nn.Module, example_inputs: Any, *, leaf: Callable[[nn.Module], bool] | None = None,
            fast: bool = True, check: Callable | None = None) -> Capture:
    """Run ``model`` (eval mode, no grad) on ``example_inputs`` and record its torch calls.

    ``fast``: convolutions return zeros of the right shape instead of computing (values never
    matter for coupling), and batch norms of such stand-ins a view of their input (nodes whose
    values are stand-ins have ``meta["fake"]``); if the model then fails, it runs again with
    every op computed.
    ``check(func, args, kwargs, module)`` is called before every recorded call (``lint``); it
    may return other positional args for the call (e.g. an input trimmed to fit).
    """
    with _CAPTURE_LOCK:
        try:
            return _capture_once(model, example_inputs, leaf, fast, check)
        except TraceError:
            if not fast:
                raise
            return _capture_once(model, example_inputs, leaf, False, check)


def _capture_once(model: nn.Module, example_inputs: Any, leaf, fast: bool, check) -> Capture:
    runner, held = eval_runner(model)
    recorder = Recorder(runner, leaf or (lambda m: False), fast, check)
    args, kwargs = split_inputs(example_inputs)
    args, kwargs = pytree.tree_map(recorder.placeholder, (args, kwargs))
    with held, torch.no_grad(), recorder.hooks(), recorder:
        try:
            out = runner(*args, **kwargs)
        except TraceError:
            raise
        except Exception as exc:  # whatever the user's forward raises
            raise TraceError(_failure(model, recorder.failed_in, exc)) from exc
    recorder.output(out)
    return Capture(recorder.graph, recorder.params, tuple(recorder.notes))


def _failure(model: nn.Module, module: str, exc: Exception) -> str:
    where = f"in {module} ({type(model.get_submodule(module)).__name__}): " if module else ""
    return (f"example input does not fit the model {type(model).__name__} (or its forward "
            f"fails): "
            f"{where}{type(exc).__name__}: {exc}{user_frame_of(exc)}")


class Recorder(TorchFunctionMode):
    """Records torch calls into ``self.graph`` while the model runs."""

    def __init__(self, model: nn.Module, leaf: Callable[[nn.Module], bool], fast: bool,
                 check: Callable | None) -> None:
        super().__init__()
        self.model, self.leaf, self.fast, self.check = model, leaf, fast, check
        self.graph = fx.Graph()
        # id -> (weak reference to the tensor, node): an activation goes when the forward drops
        # it, as in a plain run; a dead reference tells a reused id from the tensor it was
        self.seen: dict[int, tuple[Callable[[], Any], fx.Node]] = {}
        self.count = 0  # tensors remembered so far: names inputs and constants
        self.names = _tensor_names(model)
        self.params: dict[str, torch.Tensor] = {}
        self.stack: list[str] = [""]
        self.quiet = 0  # > 0 inside a leaf module: its inner calls are not recorded
        self.thread = threading.get_ident()  # module hooks fire in every thread: only ours count
        self.failed_in = ""  # the module whose torch call raised first
        self.notes: list[str] = []  # data-dependent control flow seen on the way

    # --- tensors and values -> graph arguments -------------------------------------------
    def placeholder(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            node = self.graph.placeholder(f"input_{self.count}")
            self._remember(value, node)
        return value

    def _remember(self, tensor: torch.Tensor, node: fx.Node) -> None:
        node.meta["tensor_meta"] = tensor_meta(tensor)
        node.meta["module"] = self.stack[-1]
        _taint(node)
        self.seen[id(tensor)] = (_weak(tensor), node)
        self.count += 1

    def arg(self, value: Any) -> Any:
        """``value`` with tensors and SizeInts replaced by their nodes (containers mapped)."""
        if isinstance(value, SizeInt):
            return value.node
        if isinstance(value, torch.Tensor):
            return self._tensor_node(value)
        if isinstance(value, (list, tuple)):
            mapped = [self.arg(v) for v in value]
            return type(value)(mapped) if type(value) in (list, tuple) else tuple(mapped)
        if isinstance(value, dict):
            return {k: self.arg(v) for k, v in value.items()}
        if isinstance(value, slice):
            return slice(self.arg(value.start), self.arg(value.stop), self.arg(value.step))
        return value

    def _tensor_node(self, tensor: torch.Tensor) -> fx.Node:
        hit = self.seen.get(id(tensor))
        if hit is not None and hit[0]() is tensor:
            return hit[1]
        name = self.names.get(id(tensor))
        node = self.graph.get_attr(name if name is not None else f"<constant {self.count}>")
        if name is not None:
            self.params[name] = tensor
        self._remember(tensor, node)
        return node

    # --- the mode ------------------------------------------------------------------------
    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.quiet:
            return func(*args, **kwargs)
        prop = property_name(func)
        if prop is not None and prop != "shape":
            return func(*args, **kwargs)
        if prop == "shape" or func is _SIZE_METHOD:
            return self._sizes(func, args, kwargs)
        if method_name(func) in _VALUE_READS:
            self._note_value_read(func)
        if self.check is not None:
            args = self.check(func, args, kwargs, self.stack[-1]) or args
        shaped = self._shape_only(func, args, kwargs) if self.fast else None
        try:
            out = func(*args, **kwargs) if shaped is None else shaped
        except Exception:
            self.failed_in = self.failed_in or self.stack[-1]
            raise
        if _has_tensor(out):
            self._record(func, args, kwargs, out, fake=shaped is not None)
        elif out is None and method_name(func) == "__setitem__":
            self._record(func, args, kwargs, args[0])
        return out

    def _record(self, func, args, kwargs, out, fake: bool = False) -> fx.Node:
        name = method_name(func)
        op, target = ("call_method", name) if name is not None else ("call_function", func)
        node = self.graph.create_node(op, target, self.arg(tuple(args)), self.arg(kwargs))
        node.stack_trace = innermost_user_frame()
        if fake:
            node.meta["fake"] = True
        self._outputs(node, out)
        return node

    def _shape_only(self, func, args, kwargs) -> torch.Tensor | None:
        """A stand-in of the right shape for a convolution (zeros), or for a batch norm of an
        input whose values are stand-ins already (a view of it: no memory, as values never
        matter); None: run ``func``."""
        out = fast_call(func, args, kwargs)
        if out is None and func is F.batch_norm and args and self._fake(args[0]):
            out = batch_norm_view(args, kwargs)
        return out

    def _fake(self, tensor: Any) -> bool:
        """Whether ``tensor``'s values come from a stand-in (``_shape_only``) on the way."""
        hit = self.seen.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return hit is not None and hit[0]() is tensor and hit[1].meta.get("fake", False)

    def _outputs(self, node: fx.Node, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            self._remember(out, node)
            return
        node.meta["tensor_meta"] = tuple(tensor_meta(o) if isinstance(o, torch.Tensor) else None
                                         for o in out) if isinstance(out, (tuple, list)) else None
        node.meta["module"] = self.stack[-1]
        _taint(node)
        for i, item in enumerate(out if isinstance(out, (tuple, list)) else ()):
            if isinstance(item, torch.Tensor):
                self._remember(item, self.graph.call_function(operator.getitem, (node, i)))
            elif isinstance(item, (tuple, list)) and _has_tensor(item):  # LSTM's (h, c)
                self._outputs(self.graph.call_function(operator.getitem, (node, i)), item)

    def _sizes(self, func, args, kwargs):
        """``x.shape`` / ``x.size()`` / ``x.size(d)`` as SizeInts linked to a size node."""
        value = func(*args, **kwargs)
        source = self._tensor_node(args[0])
        if isinstance(value, int):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            return SizeInt(value, self._in_module(self.graph.call_method("size", (source, dim))))
        node = self.graph.call_method("size", (source,))
        return torch.Size([SizeInt(v, self._in_module(self.graph.call_function(
            operator.getitem, (node, i)))) for i, v in enumerate(value)])

    def _in_module(self, node: fx.Node) -> fx.Node:
        node.meta["module"] = self.stack[-1]  # where the size was read (``compared`` uses it)
        return node

    def _note_value_read(self, func: Any) -> None:
        source = user_source(innermost_user_frame()) or "an unknown line"
        note = (f"the forward reads tensor values ({method_name(func)}) at {source}: the graph "
                f"is the path these example inputs took")
        if note not in self.notes:
            self.notes.append(note)

    def output(self, out: Any) -> None:
        leaves = [self.arg(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.graph.output(tuple(leaves))

    # --- module hooks: where each call happens, and leaf modules --------------------------
    @contextmanager
    def hooks(self) -> Iterator[None]:
        handles = []
        for name, module in self.model.named_modules():
            handles.append(module.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            handles.append(module.register_forward_hook(self._leave(name), with_kwargs=True,
                                                        always_call=True))
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # Hooks take ``*rest``: torch registers a hook and its with_kwargs flag in two steps, so a
    # forward running in another thread meanwhile may call it without kwargs (it returns then).
    def _enter(self, name: str):
        def hook(module, *rest):
            if threading.get_ident() != self.thread:
                return  # a plain forward of the same model in another thread
            args, kwargs = rest
            if not self.quiet and self.leaf(module):
                node = self.graph.call_module(name, self.arg(tuple(args)), self.arg(kwargs))
                node.stack_trace = innermost_user_frame()
                self._leaf_node = node
                self.quiet += 1
            elif self.quiet:
                self.quiet += 1
            self.stack.append(name)
        return hook

    def _leave(self, name: str):
        def hook(module, *rest):
            if threading.get_ident() != self.thread:
                return
            out = rest[-1]
            self.stack.pop()
            if self.quiet:
                self.quiet -= 1
                if not self.quiet and out is not None:
                    self._outputs(self._leaf_node, out)
        return hook


def _taint(node: fx.Node) -> None:
    """Mark ``node`` fake (its values are stand-ins) when one of its inputs is."""
    if "fake" not in node.meta:
        node.meta["fake"] = any(a.meta.get("fake", False) for a in node.all_input_nodes)


def _weak(tensor: torch.Tensor) -> Callable[[], Any]:
    """A weak reference to ``tensor``, or a strong one where it takes none."""
    try:
        return weakref.ref(tensor)
    except TypeError:
        return lambda: tensor


def _has_tensor(out: Any) -> bool:
    return isinstance(out, torch.Tensor) or isinstance(out, (tuple, list)) and any(
        isinstance(o, torch.Tensor) for o in out)


def _tensor_names(model: nn.Module) -> dict[int, str]:
    """id -> qualified name of every parameter and buffer (a shared one keeps its first name)."""
    names: dict[int, str] = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        names.setdefault(id(t), name)
    return names


def tensor_meta(t: torch.Tensor) -> TensorMetadata:
    """What fx's ShapeProp records for a tensor (shape, dtype, ...), cheaply."""
    return TensorMetadata(t.shape, t.dtype, t.requires_grad, (), None, False, {})
