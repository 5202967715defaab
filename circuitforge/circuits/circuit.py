"""The :class:`Circuit`: a set of edges of the component graph, with the evidence that it is faithful.

Edge ids are the graph's (``"a0.h1->a2.kv0<v>"``, ``"m1->logits"``); :attr:`Circuit.nodes` are the
component ids touched by them (``"a3.h1"``, ``"a3.kv0"``, ``"m2"``; ``input``/``logits`` are endpoints,
not components). JSON format ``circuitforge.circuit/1``.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Bool

from circuitforge.attribution.graph import Layout, layout, reader_component, split_edge
from circuitforge.errors import CircuitForgeError

FORMAT = "circuitforge.circuit/1"


@dataclass(eq=False)
class Circuit:
    """A circuit and its evidence.

    Attributes:
        edges: edge ids ``"src->dst"``.
        faithfulness: ``(M_circuit − M_corrupt) / (M_clean − M_corrupt)`` with every other edge patched to
            its corrupted value (see :func:`circuitforge.circuits.faithfulness`), when measured.
        model, task: identities (the model block carries the architecture).
        method: the attribution graph's method and settings; ``corruption``, ``metric``: as measured.
        selection: how the edges were chosen (``{"kind": "top-n", "n": 40, "pruned": true}``...).
        scores: edge id → attribution score (for plots).
        curve: faithfulness curve ``[{"n_edges", "faithfulness"}]`` (minimal circuits).
        reached: whether the requested faithfulness was reached (minimal circuits); ``message`` says so.
        baselines: same-size random and weight-magnitude circuits' faithfulness.
        stability: Jaccard / rank correlation across task halves and seeds.
    """

    edges: list[str]
    faithfulness: float | None = None
    model: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    method: dict[str, Any] = field(default_factory=dict)
    corruption: str = "counterfactual"
    metric: str = "logit_diff"
    selection: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)
    reached: bool | None = None
    message: str = ""
    baselines: dict[str, Any] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)
    clean_metric: float | None = None
    corrupt_metric: float | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def nodes(self) -> set[str]:
        """Component ids of the circuit: every non-input source, and every destination's component
        (a KV node ``a{L}.kv{G}`` when any of its k/v edges is in), excluding ``logits``."""
        out: set[str] = set()
        for e in self.edges:
            s, d = split_edge(e)
            if s != "input":
                out.add(s)
            comp = reader_component(d)
            if comp != "logits":
                out.add(comp)
        return out

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def found_on(self, handle: Any, task: Any) -> bool:
        """True when this circuit was found on ``handle``'s weights and ``task``'s rows (both by sha256),
        i.e. when it may be reused instead of searched again."""
        return self.model.get("sha256") == handle.sha256 and self.task.get("sha256") == task.sha256

    def check_found_on(self, handle: Any, task: Any, rows: str) -> None:
        """Raise :class:`CircuitForgeError` (one line) unless :meth:`found_on` holds, saying whether the
        weights or the rows differ; ``rows`` names the rows expected (``"the first 24 forget rows"``)."""
        if self.model.get("sha256") != handle.sha256:
            raise CircuitForgeError(
                f"the circuit was found on other weights (model sha256 {str(self.model.get('sha256'))[:12]}…, "
                f"{handle.spec} is {handle.sha256[:12]}…): find it on this model")
        if self.task.get("sha256") != task.sha256:
            raise CircuitForgeError(f"the circuit was found on other rows than {rows} (task sha256 "
                                    f"{str(self.task.get('sha256'))[:12]}…): find it on those rows")

    def layout(self) -> Layout:
        m = self.model
        return layout(int(m["n_layers"]), int(m["n_heads"]), int(m["n_kv_heads"]))

    def keep_mask(self, lay: Layout | None = None) -> Bool[torch.Tensor, "writers readers"]:
        """``[writers, readers]`` True on the circuit's edges (in ``lay``, default the circuit's own)."""
        return keep_mask(lay or self.layout(), self.edges)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "model": self.model, "task": self.task, "method": self.method,
            "corruption": self.corruption, "metric": self.metric, "selection": self.selection,
            "faithfulness": self.faithfulness, "clean_metric": self.clean_metric,
            "corrupt_metric": self.corrupt_metric, "reached": self.reached, "message": self.message,
            "n_edges": self.n_edges, "nodes": sorted(self.nodes),
            "edges": [{"src": s, "dst": d, "score": self.scores.get(f"{s}->{d}")} for s, d in map(split_edge, self.edges)],
            "curve": self.curve, "baselines": self.baselines, "stability": self.stability,
            "versions": self.versions,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        from circuitforge._provenance import json_text

        return json_text(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Circuit":
        if d.get("format") != FORMAT:
            raise CircuitForgeError(f"not a {FORMAT} document (format={d.get('format')!r})")
        edges, scores = [], {}
        rows = d.get("edges", [])
        if not isinstance(rows, list):
            raise CircuitForgeError("circuit JSON: 'edges' must be a list")
        for i, e in enumerate(rows):
            if not isinstance(e, dict) or not isinstance(e.get("src"), str) or not isinstance(e.get("dst"), str):
                raise CircuitForgeError(f"circuit JSON: edge {i + 1} needs string fields 'src' and 'dst'")
            eid = f"{e['src']}->{e['dst']}"
            edges.append(eid)
            if e.get("score") is not None:
                try:
                    scores[eid] = float(e["score"])
                except (TypeError, ValueError) as err:
                    raise CircuitForgeError(f"circuit JSON: edge {i + 1} ({eid}) has a non-numeric score") from err
        for key in ("model", "task", "method", "selection", "baselines", "stability", "versions"):
            if not isinstance(d.get(key, {}), dict):
                raise CircuitForgeError(f"circuit JSON: {key!r} must be an object")
        return cls(
            edges=edges, faithfulness=d.get("faithfulness"), model=dict(d.get("model", {})),
            task=dict(d.get("task", {})), method=dict(d.get("method", {})),
            corruption=d.get("corruption", "counterfactual"), metric=d.get("metric", "logit_diff"),
            selection=dict(d.get("selection", {})), scores=scores, curve=list(d.get("curve", [])),
            reached=d.get("reached"), message=d.get("message", ""), baselines=dict(d.get("baselines", {})),
            stability=dict(d.get("stability", {})), clean_metric=d.get("clean_metric"),
            corrupt_metric=d.get("corrupt_metric"), versions=dict(d.get("versions", {})),
        )

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> "Circuit":
        s = str(source)
        try:
            text = s if s.lstrip().startswith("{") else open(s, encoding="utf-8").read()
            d = json.loads(text)
        except OSError as e:
            raise CircuitForgeError(f"{s}: cannot read circuit ({e.strerror})") from e
        except json.JSONDecodeError as e:
            raise CircuitForgeError(f"{s}: invalid JSON ({e.msg})") from e
        where = "circuit" if s.lstrip().startswith("{") else s
        if not isinstance(d, dict):
            raise CircuitForgeError(f"{where}: a circuit JSON must be an object")
        try:
            return cls.from_dict(d)
        except CircuitForgeError as e:
            raise CircuitForgeError(f"{where}: {e}") from e


def keep_mask(lay: Layout, edges: list[str]) -> Bool[torch.Tensor, "writers readers"]:
    """Boolean ``[writers, readers]`` mask of ``edges`` (ids checked against ``lay``)."""
    keep = torch.zeros(len(lay.writers), len(lay.readers), dtype=torch.bool)
    up = lay.upstream()
    for e in edges:
        s, d = split_edge(e)
        w, r = lay.writer_index(s), lay.reader_index(d)
        if not bool(up[w, r]):
            raise CircuitForgeError(f"{e}: {s} is not upstream of {d}")
        keep[w, r] = True
    return keep


def edges_of(lay: Layout, keep: Bool[torch.Tensor, "writers readers"]) -> list[str]:
    w, r = keep.nonzero(as_tuple=True)
    return [f"{lay.writers[i]}->{lay.readers[j]}" for i, j in zip(w.tolist(), r.tolist(), strict=True)]
