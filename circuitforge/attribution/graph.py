"""The component graph and its dense score tensors (node and edge ids: ``docs/design.md``).

Writers (what adds to the residual stream), in execution order::

    input, a0.h0 … a0.h{H-1}, m0, a1.h0 …, m{L-1}            W = 1 + L·(H + 1)

Readers (what reads the residual stream), in execution order::

    a0.h0<q> … a0.h{H-1}<q>, a0.kv0<k> … a0.kv{G-1}<k>, a0.kv0<v> … a0.kv{G-1}<v>, m0, a1.h0<q> …, logits
                                                                                  R = L·(H + 2G + 1) + 1

Grouped-query attention is native: a KV head ``a{L}.kv{G}`` has one ``<k>`` and one ``<v>`` reader that
serves its ``H/G`` query heads (for models without GQA, G = H). A writer is *upstream* of a reader when
it runs earlier in the forward pass: heads of layer L feed ``m{L}`` and everything in later layers;
``m{L}`` feeds layers > L; ``input`` feeds everything; every writer feeds ``logits``.

Scores are signed floats; **positive means the component pushes the metric toward the clean answer**
(denoising convention, see :func:`circuitforge.attribution.attribute`). ``edge_scores[w, r]`` is the
score of the edge ``writers[w] -> readers[r]``; pairs that are not upstream are 0 and masked out by
:attr:`Graph.mask`; edges that were not measured (exact patching of an edge subset) are NaN.
"""

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from circuitforge.errors import CircuitForgeError

FORMAT = "circuitforge.graph/1"
_CHANNEL = re.compile(r"^(?P<comp>.+?)(?:<(?P<ch>[qkv])>)?$")


@dataclass(frozen=True)
class Layout:
    """Writer and reader ids of one architecture, their execution times and the upstream mask."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    writer_time: tuple[int, ...]
    reader_time: tuple[int, ...]

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def reader_block(self) -> int:
        """Readers per layer: H q-readers, G k-readers, G v-readers, one MLP reader."""
        return self.n_heads + 2 * self.n_kv_heads + 1

    def upstream(self) -> Bool[torch.Tensor, "writers readers"]:
        wt = torch.tensor(self.writer_time)
        rt = torch.tensor(self.reader_time)
        return wt[:, None] < rt[None, :]

    def writer_index(self, node: str) -> int:
        try:
            return _index(self.writers)[node]
        except KeyError:
            raise CircuitForgeError(f"{node!r} is not a writer of this graph (input, a{{L}}.h{{H}}, m{{L}})") from None

    def reader_index(self, node: str) -> int:
        try:
            return _index(self.readers)[node]
        except KeyError:
            raise CircuitForgeError(
                f"{node!r} is not a reader of this graph (a{{L}}.h{{H}}<q>, a{{L}}.kv{{G}}<k|v>, m{{L}}, logits)"
            ) from None

    def edge_index(self, edges: Sequence[str]) -> tuple[Int[torch.Tensor, " edges"], Int[torch.Tensor, " edges"]]:
        """(writer indices, reader indices) of ``edges`` (``"src->dst"``); a bad name is a one-line error."""
        pairs = [(self.writer_index(s), self.reader_index(d)) for s, d in map(split_edge, edges)]
        return (torch.tensor([w for w, _ in pairs], dtype=torch.long),
                torch.tensor([r for _, r in pairs], dtype=torch.long))

    def n_up(self, reader: int) -> int:
        """Number of writers upstream of reader index ``reader`` (they are a prefix of the writers)."""
        t = self.reader_time[reader]
        return sum(1 for wt in self.writer_time if wt < t)


@lru_cache(maxsize=32)
def _index(ids: tuple[str, ...]) -> dict[str, int]:
    return {x: i for i, x in enumerate(ids)}


@lru_cache(maxsize=32)
def layout(n_layers: int, n_heads: int, n_kv_heads: int) -> Layout:
    """The :class:`Layout` of a model with these dimensions (cached)."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise CircuitForgeError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
    writers, wt = ["input"], [-1]
    readers, rt = [], []
    for L in range(n_layers):
        writers += [f"a{L}.h{h}" for h in range(n_heads)] + [f"m{L}"]
        wt += [2 * L] * n_heads + [2 * L + 1]
        readers += [f"a{L}.h{h}<q>" for h in range(n_heads)]
        readers += [f"a{L}.kv{g}<k>" for g in range(n_kv_heads)] + [f"a{L}.kv{g}<v>" for g in range(n_kv_heads)]
        readers += [f"m{L}"]
        rt += [2 * L] * (n_heads + 2 * n_kv_heads) + [2 * L + 1]
    readers.append("logits")
    rt.append(2 * n_layers)
    return Layout(n_layers, n_heads, n_kv_heads, tuple(writers), tuple(readers), tuple(wt), tuple(rt))


def layout_of(handle: Any) -> Layout:
    """The layout of a :class:`~circuitforge.models.ModelHandle`."""
    return layout(handle.n_layers, handle.n_heads, handle.n_kv_heads)


def reader_component(reader: str) -> str:
    """``"a3.h1<q>"`` → ``"a3.h1"``, ``"a3.kv0<k>"`` → ``"a3.kv0"``, ``"m2"`` → ``"m2"``."""
    m = _CHANNEL.match(reader)
    assert m is not None
    return m["comp"]


def split_edge(edge: str) -> tuple[str, str]:
    """``"a0.h1->m2"`` → ``("a0.h1", "m2")``."""
    src, sep, dst = edge.partition("->")
    if not sep or not src or not dst:
        raise CircuitForgeError(f"{edge!r} is not an edge id ('src->dst')")
    return src, dst


def _num(x: float) -> float | None:
    return None if x != x else float(x)


@dataclass(eq=False)
class Graph:
    """Attribution scores over the component graph of one model on one task.

    Attributes:
        writers, readers: node ids (module docstring), in execution order.
        node_scores: ``[writers]`` score of each writer (for ``level="edge"`` graphs it equals the sum
            of the writer's outgoing edge scores up to float rounding).
        edge_scores: ``[writers, readers]`` or None for node-level graphs; 0 where not upstream, NaN
            where not measured.
        method: ``"eap"``, ``"eap-ig"`` or ``"exact"``; ``settings``: its settings (ig_steps, corruption,
            metric...).
        level: ``"node"`` or ``"edge"``.
        model: model identity (spec, sha256, family) plus the architecture (n_layers, n_heads, n_kv_heads).
        task: task identity (name, sha256, n, source).
        clean_metric, corrupt_metric: the metric on the clean run and with every edge corrupted.
        row_node_scores, row_edge_scores: optional per-row scores (``attribute(per_row=True)``; not
            serialised). Their mean over rows is ``node_scores`` / ``edge_scores``.
    """

    writers: tuple[str, ...]
    readers: tuple[str, ...]
    node_scores: Float[torch.Tensor, " writers"]
    edge_scores: Float[torch.Tensor, "writers readers"] | None
    method: str
    level: str
    settings: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    clean_metric: float | None = None
    corrupt_metric: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    row_node_scores: Float[torch.Tensor, "rows writers"] | None = None
    row_edge_scores: Float[torch.Tensor, "rows writers readers"] | None = None

    # -- structure -------------------------------------------------------------------------------
    @property
    def layout(self) -> Layout:
        m = self.model
        return layout(int(m["n_layers"]), int(m["n_heads"]), int(m["n_kv_heads"]))

    @property
    def mask(self) -> Bool[torch.Tensor, "writers readers"]:
        """True on upstream pairs that carry a measured score."""
        up = self.layout.upstream()
        if self.edge_scores is None:
            return up
        return up & ~torch.isnan(self.edge_scores)

    @property
    def edges(self) -> list[str]:
        """All measured edge ids ``"src->dst"`` (writer-major order)."""
        w, r = self.mask.nonzero(as_tuple=True)
        return [f"{self.writers[i]}->{self.readers[j]}" for i, j in zip(w.tolist(), r.tolist(), strict=True)]

    @property
    def n_edges(self) -> int:
        return int(self.layout.upstream().sum())

    # -- lookup ----------------------------------------------------------------------------------
    def node_score(self, node: str) -> float:
        """Score of writer ``node`` (``"input"``, ``"a3.h1"``, ``"m2"``)."""
        return float(self.node_scores[self.layout.writer_index(node)])

    def edge_score(self, edge: str) -> float:
        """Score of ``"src->dst"`` (e.g. ``"a0.h1->a2.kv0<v>"``); NaN when it was not measured."""
        if self.edge_scores is None:
            raise CircuitForgeError("this is a node-level graph; attribute with level='edge' for edge scores")
        src, dst = split_edge(edge)
        lay = self.layout
        w, r = lay.writer_index(src), lay.reader_index(dst)
        if not bool(lay.upstream()[w, r]):
            raise CircuitForgeError(f"{edge}: {src} is not upstream of {dst}")
        return float(self.edge_scores[w, r])

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nodes = [{"id": n, "score": _num(s)} for n, s in zip(self.writers, self.node_scores.tolist(), strict=True)]
        edges: list[dict[str, Any]] = []
        if self.edge_scores is not None:
            w, r = self.mask.nonzero(as_tuple=True)
            vals = self.edge_scores[w, r].tolist()
            edges = [
                {"src": self.writers[i], "dst": self.readers[j], "score": float(v)}
                for i, j, v in zip(w.tolist(), r.tolist(), vals, strict=True)
            ]
        return {
            "format": FORMAT,
            "model": self.model,
            "task": self.task,
            "method": {"name": self.method, **self.settings},
            "level": self.level,
            "clean_metric": self.clean_metric,
            "corrupt_metric": self.corrupt_metric,
            "versions": self.versions,
            "n_writers": len(self.writers),
            "n_readers": len(self.readers),
            "nodes": nodes,
            "edges": edges,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The JSON text (format ``circuitforge.graph/1``); also written atomically to ``path`` if given."""
        from circuitforge._provenance import json_text

        return json_text(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Graph":
        if d.get("format") != FORMAT:
            raise CircuitForgeError(f"not a {FORMAT} document (format={d.get('format')!r})")
        try:
            m = d["model"]
            lay = layout(int(m["n_layers"]), int(m["n_heads"]), int(m["n_kv_heads"]))
        except (KeyError, TypeError, ValueError) as e:
            raise CircuitForgeError(f"graph JSON: model block lacks the architecture ({e})") from e
        node = torch.zeros(len(lay.writers))
        for n in d.get("nodes", []):
            node[lay.writer_index(n["id"])] = float("nan") if n["score"] is None else float(n["score"])
        level = d.get("level", "edge" if d.get("edges") else "node")
        edge = None
        if level == "edge":
            edge = torch.full((len(lay.writers), len(lay.readers)), float("nan"))
            edge[~lay.upstream()] = 0.0
            for ed in d.get("edges", []):
                edge[lay.writer_index(ed["src"]), lay.reader_index(ed["dst"])] = float(ed["score"])
        method = dict(d.get("method", {}))
        name = str(method.pop("name", "unknown"))
        return cls(lay.writers, lay.readers, node, edge, name, level, method, dict(m), dict(d.get("task", {})),
                   d.get("clean_metric"), d.get("corrupt_metric"), dict(d.get("versions", {})))

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> "Graph":
        """Load from a JSON string or a path to a JSON file."""
        s = str(source)
        if s.lstrip().startswith("{"):
            return cls.from_dict(json.loads(s))
        try:
            text = open(s, encoding="utf-8").read()
        except OSError as e:
            raise CircuitForgeError(f"{s}: cannot read graph ({e.strerror})") from e
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise CircuitForgeError(f"{s}: invalid JSON ({e.msg})") from e
