"""The maths of coupled channels: element ids, unions, and connected components.

Every channel a layer produces is an *element* (an int). A tensor flowing through the graph carries
the element id of each position along its channel dimension (a ``Flow``). Ops that force two
positions to be pruned together record a union; layers record where elements sit in their weights.
Connected components of the unions are the coupled channels. Pure numpy, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphs.errors import Refused


@dataclass(frozen=True)
class Flow:
    """Element ids along dimension ``dim`` of one tensor.

    Example:
        >>> Flow(np.arange(4), 1).size
        4
    """

    ids: np.ndarray
    dim: int

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Record:
    """Elements ``ids`` sit at ``positions`` along weight dim ``dim`` of ``module`` (in ``role``)."""

    module: str
    role: str
    dim: int
    ids: np.ndarray
    positions: np.ndarray
    attr: str = ""


@dataclass(frozen=True)
class Site:
    """An op with MACs outside any layer (``datamodel.OpSite``) and the element ids along the
    output dim ``dim`` where its channels sit (None: on a dim the op contracts away)."""

    node: str
    op: str
    module: str
    shapes: tuple[tuple[int, ...], ...]
    dim: int | None
    ids: np.ndarray


@dataclass
class ChannelSets:
    """A builder of elements, unions, blocks and records for one trace (never shared)."""

    count: int = 0
    edges: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    blocks: list[tuple[np.ndarray, str]] = field(default_factory=list)
    approximations: list[tuple[np.ndarray, str]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)

    def fresh(self, n: int) -> np.ndarray:
        ids = np.arange(self.count, self.count + n, dtype=np.int64)
        self.count += n
        return ids

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        if a.shape != b.shape:
            raise Refused(f"cannot couple {a.shape[0]} channels with {b.shape[0]}")
        self.edges.append((a, b))

    def block(self, ids: np.ndarray, reason: str) -> None:
        if ids.size:
            self.blocks.append((ids, reason))

    def approximate(self, ids: np.ndarray, reason: str) -> None:
        """These channels may be pruned, but not exactly: ``reason`` says what changes."""
        if ids.size:
            self.approximations.append((ids, reason))

    def record(self, module: str, role: str, dim: int, ids: np.ndarray, attr: str = "") -> None:
        positions = np.arange(ids.shape[0], dtype=np.int64)
        self.records.append(Record(module, role, dim, ids, positions, attr))

    def same_channels(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether ids ``a`` and ``b`` cover the same coupled channels (unions so far)."""
        if a.shape == b.shape and np.array_equal(a, b):
            return True
        labels = self.components()
        return set(labels[a].tolist()) == set(labels[b].tolist())

    def components(self) -> np.ndarray:
        """Label of each element: the smallest element id in its connected component."""
        return connected_components(self.count, self.edges)


def connected_components(n: int, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Label every node 0..n-1 with the smallest node of its component (min-label propagation).

    Example:
        >>> connected_components(4, [(np.array([3]), np.array([1]))]).tolist()
        [0, 1, 2, 1]
    """
    labels = np.arange(n, dtype=np.int64)
    if not edges:
        return labels
    a = np.concatenate([e[0] for e in edges])
    b = np.concatenate([e[1] for e in edges])
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # pointer jumping: labels only ever point to smaller nodes
        while not np.array_equal(labels, labels[labels]):
            labels = labels[labels]
        if np.array_equal(labels, before):
            return labels
