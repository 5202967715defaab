"""Choosing a circuit from a :class:`~circuitforge.attribution.Graph`: top-n, threshold, greedy;
pruning of dangling nodes; same-size random and weight-magnitude baselines.

Rankings use ``|score|`` (a strongly negative edge matters as much as a positive one). For node-level
graphs the selected units are writers (``input`` is always in) and the circuit holds every upstream
edge among them: a head's ``<q>`` reader when the head is in, a KV head's ``<k>``/``<v>`` readers when
any query head of its group is in, MLP readers, and ``logits``.
"""

from typing import Any

import torch
from jaxtyping import Bool, Float

from circuitforge.attribution.graph import Graph, Layout, reader_component
from circuitforge.circuits.circuit import Circuit, edges_of
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


def _groups(lay: Layout) -> tuple[list[list[int]], list[list[int]]]:
    """For every writer, the readers feeding it (its inputs); for every reader, the writers it feeds
    (its component's outputs). Input has no inputs; logits feeds nothing."""
    w_in: list[list[int]] = [[] for _ in lay.writers]
    r_out: list[list[int]] = [[] for _ in lay.readers]
    widx = {w: i for i, w in enumerate(lay.writers)}
    g = lay.group_size
    for j, r in enumerate(lay.readers):
        comp = reader_component(r)
        if comp == "logits":
            continue
        if ".kv" in comp:
            L, G = comp[1:].split(".kv")
            heads = [widx[f"a{L}.h{h}"] for h in range(int(G) * g, (int(G) + 1) * g)]
        else:
            heads = [widx[comp]]
        for w in heads:
            w_in[w].append(j)
            r_out[j].append(w)
    return w_in, r_out


def prune(lay: Layout, keep: Bool[torch.Tensor, "writers readers"]) -> Bool[torch.Tensor, "writers readers"]:
    """Drop dangling parts until nothing changes: edges out of a component none of whose inputs is in
    the circuit, and edges into a reader whose component has no outgoing edge. ``input`` and ``logits``
    never dangle. (With counterfactual corruption this leaves the circuit's faithfulness unchanged.)"""
    keep = keep.clone()
    w_in, r_out = _groups(lay)
    while True:
        before = int(keep.sum())
        has_in = keep.any(0)  # per reader: any incoming edge
        has_out = keep.any(1)  # per writer: any outgoing edge
        for w in range(1, len(lay.writers)):
            if keep[w].any() and not any(bool(has_in[r]) for r in w_in[w]):
                keep[w] = False
        for r in range(len(lay.readers) - 1):
            if keep[:, r].any() and not any(bool(has_out[w]) for w in r_out[r]):
                keep[:, r] = False
        if int(keep.sum()) == before:
            return keep


def nodes_to_keep(lay: Layout, nodes: set[str]) -> Bool[torch.Tensor, "writers readers"]:
    """Every upstream edge among writer set ``nodes`` (plus ``input``) and their readers (plus ``logits``)."""
    w_in, _ = _groups(lay)
    wsel = torch.zeros(len(lay.writers), dtype=torch.bool)
    wsel[0] = True
    rsel = torch.zeros(len(lay.readers), dtype=torch.bool)
    rsel[-1] = True
    for n in nodes:
        w = lay.writer_index(n)
        wsel[w] = True
        for r in w_in[w]:
            rsel[r] = True
    return wsel[:, None] & rsel[None, :] & lay.upstream()


def _scores_mask(graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    if graph.edge_scores is None:
        s = graph.node_scores.clone()
        valid = ~torch.isnan(s)
        valid[0] = False  # input is always in
        return s, valid
    return graph.edge_scores, graph.mask


def ranked_keep(graph: Graph, n: int) -> Bool[torch.Tensor, "writers readers"]:
    """Keep mask of the ``n`` highest-|score| edges (nodes for node-level graphs), unpruned."""
    lay = graph.layout
    s, valid = _scores_mask(graph)
    flat = torch.where(valid, s.abs(), torch.tensor(-1.0)).flatten()
    n = max(0, min(n, int(valid.sum())))
    top = torch.topk(flat, n).indices if n else torch.zeros(0, dtype=torch.long)
    if graph.edge_scores is None:
        return nodes_to_keep(lay, {graph.writers[i] for i in top.tolist()})
    keep = torch.zeros(flat.shape, dtype=torch.bool)
    keep[top] = True
    return keep.view(s.shape)


def _circuit(graph: Graph, keep: torch.Tensor, selection: dict[str, Any], do_prune: bool) -> Circuit:
    lay = graph.layout
    if do_prune:
        keep = prune(lay, keep)
    edges = edges_of(lay, keep)
    scores: dict[str, float] = {}
    if graph.edge_scores is not None:
        w, r = keep.nonzero(as_tuple=True)
        scores = {e: float(v) for e, v in zip(edges, graph.edge_scores[w, r].tolist(), strict=True)}
    settings = dict(graph.settings)
    return Circuit(
        edges=edges, model=dict(graph.model), task=dict(graph.task), method={"name": graph.method, **settings},
        corruption=str(settings.get("corruption", "counterfactual")), metric=str(settings.get("metric", "logit_diff")),
        selection={**selection, "pruned": do_prune, "level": graph.level}, scores=scores,
        clean_metric=graph.clean_metric, corrupt_metric=graph.corrupt_metric, versions=dict(graph.versions),
    )


def select_top_n(graph: Graph, n: int, prune_dangling: bool = True) -> Circuit:
    """The ``n`` highest-|score| edges (or nodes, for a node-level graph), then pruned."""
    if n < 0:
        raise CircuitForgeError(f"top-n needs n >= 0, not {n}")
    return _circuit(graph, ranked_keep(graph, n), {"kind": "top-n", "n": n}, prune_dangling)


def select_threshold(graph: Graph, threshold: float, prune_dangling: bool = True) -> Circuit:
    """Every edge (node) with ``|score| >= threshold``, then pruned."""
    s, valid = _scores_mask(graph)
    n = int(((s.abs() >= threshold) & valid).sum())
    return _circuit(graph, ranked_keep(graph, n), {"kind": "threshold", "threshold": threshold}, prune_dangling)


def select_greedy(graph: Graph, n: int) -> Circuit:
    """Grow a connected circuit from ``logits`` backwards: repeatedly add the highest-|score| edge whose
    destination's component already has a path to ``logits`` (edge-level graphs)."""
    if graph.edge_scores is None:
        raise CircuitForgeError("greedy selection needs an edge-level graph")
    lay = graph.layout
    _, r_out = _groups(lay)
    s = torch.where(graph.mask, graph.edge_scores.abs(), torch.tensor(-1.0))
    keep = torch.zeros_like(graph.mask)
    live_w = torch.zeros(len(lay.writers), dtype=torch.bool)  # writers connected to logits
    live_r = torch.zeros(len(lay.readers), dtype=torch.bool)
    live_r[-1] = True
    for _ in range(n):
        cand = torch.where(live_r[None, :] & ~keep, s, torch.tensor(-1.0))
        best = int(cand.argmax())
        w, r = divmod(best, s.shape[1])
        if float(cand.flatten()[best]) < 0:
            break
        keep[w, r] = True
        if not live_w[w]:
            live_w[w] = True
            for j, outs in enumerate(r_out):
                if w in outs:
                    live_r[j] = True
    return _circuit(graph, keep, {"kind": "greedy", "n": n}, False)


def random_keep(lay: Layout, n: int, seed: int = 0) -> Bool[torch.Tensor, "writers readers"]:
    """``n`` upstream edges drawn uniformly (seeded)."""
    up = lay.upstream().flatten()
    idx = up.nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    pick = idx[torch.randperm(len(idx), generator=g)[:n]]
    keep = torch.zeros_like(up)
    keep[pick] = True
    return keep.view(len(lay.writers), len(lay.readers))


def weight_scores(handle: ModelHandle, lay: Layout) -> Float[torch.Tensor, "writers readers"]:
    """Weight-magnitude edge scores: ‖θ_src‖·‖θ_dst‖ (Frobenius norms of the components' parameter
    slices; ``input`` and ``logits`` count as 1). Non-upstream pairs are 0."""
    from circuitforge.models import component_params

    params = handle.named_parameters()

    def norm(node: str) -> float:
        if node in ("input", "logits"):
            return 1.0
        return float(sum(float((p.view.float() ** 2).sum()) for p in component_params(handle, node, params)) ** 0.5)

    wn = torch.tensor([norm(w) for w in lay.writers])
    comps = [reader_component(r) for r in lay.readers]
    cache = {c: norm(c) for c in set(comps)}
    rn = torch.tensor([cache[c] for c in comps])
    return wn[:, None] * rn[None, :] * lay.upstream()


def weight_keep(handle: ModelHandle, lay: Layout, n: int) -> Bool[torch.Tensor, "writers readers"]:
    s = weight_scores(handle, lay).flatten()
    keep = torch.zeros(s.shape, dtype=torch.bool)
    keep[torch.topk(s, n).indices] = True
    return keep.view(len(lay.writers), len(lay.readers))
