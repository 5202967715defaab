"""Minimal circuits at neuron resolution: attention heads plus individual MLP neurons ``m{L}.n{I}``.

Units are ranked by ``|score|`` of a :class:`~circuitforge.attribution.neurons.NeuronGraph` (heads and
neurons in one ranking: both scores estimate the same quantity, the metric change of restoring that
unit). The circuit of size n is the top-n units. **Faithfulness by real ablation, at node level:** one
forward pass on the clean prompts in which every head's ``hook_z`` and every neuron's activation
(``mlp.hook_post``) *outside* the circuit is set to its value on the corrupt prompt (all positions);
circuit units compute on whatever reaches them. Then

    faithfulness = (M_circuit − M_corrupt) / (M_clean − M_corrupt)

Sizes are probed on a doubling grid and the crossing refined by bisection (as in
:func:`~circuitforge.circuits.minimal_circuit`). Evidence kept beside the circuit: the curve,
same-size random and weight-magnitude baselines (same number of heads and of neurons) and,
optionally, stability across task halves.

The result is a :class:`~circuitforge.circuits.Circuit` whose ``edges`` are the component-level edges
among its heads and the MLPs holding its neurons (so edge-based consumers keep working; an edge-level
faithfulness of those edges treats each such MLP as whole), and whose ``selection`` holds the neuron-level
content: ``selection["level"] == "neuron"``, ``selection["heads"]`` and ``selection["neurons"]``
(``{"m{L}": [I, ...]}``, aggregated per layer so a 30 × 1536-neuron model stays readable). Use
:func:`edit_nodes` for the finest-resolution component ids (what MANSU edits).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution.corruption import encode_task
from circuitforge.attribution.graph import layout_of
from circuitforge.attribution.metrics import MetricFn, prime, resolve
from circuitforge.attribution.neurons import NeuronGraph, attribute_neurons
from circuitforge.circuits.circuit import Circuit, edges_of
from circuitforge.circuits.minimal import choose_size
from circuitforge.circuits.search import CircuitSearch
from circuitforge.circuits.select import nodes_to_keep
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.weights import component_params, parse_node

Keep = tuple[Bool[torch.Tensor, "layers heads"], Bool[torch.Tensor, "layers d_mlp"]]


class NeuronEvaluator:
    """Clean metric, corrupt metric and corrupt head/neuron activations of a task, computed once;
    :meth:`faithfulness` of any (heads, neurons) keep pair then costs one forward pass per chunk."""

    def __init__(self, handle: ModelHandle, task: Task, metric: str | MetricFn | None = None,
                 batch_size: int | None = 32) -> None:
        self.handle = handle
        self.metric_name, fn = resolve(metric)
        batch = encode_task(handle, task, "counterfactual")
        L = handle.n_layers
        self.names = [f"blocks.{ly}.attn.hook_z" for ly in range(L)] + [f"blocks.{ly}.mlp.hook_post" for ly in range(L)]
        self.states: list[tuple[C.Chunk, dict[str, torch.Tensor]]] = []
        self.clean = self.corrupt = 0.0
        b = handle.bridge
        with H.prepared(handle, flags=False), torch.no_grad():
            for ch in C.chunks(batch, fn, batch_size):
                sub = ch.batch
                assert sub.corrupt is not None
                rows = torch.arange(len(sub))
                cl = b(sub.clean)[rows, sub.last]
                prime(fn, cl)
                corr: dict[str, torch.Tensor] = {}

                def save(n: str, store: dict[str, torch.Tensor] = corr) -> Any:
                    return lambda x, hook: store.__setitem__(n, x.detach().clone())

                with H.installed(b, [(n, save(n)) for n in self.names]):
                    cr = b(sub.corrupt)[rows, sub.last]
                self.clean += ch.weight * float(ch.metric(cl))
                self.corrupt += ch.weight * float(ch.metric(cr))
                self.states.append((ch, corr))

    def metric(self, keep: Keep) -> float:
        """Task-mean metric with every head / neuron outside ``keep`` set to its corrupt activation."""
        heads, neurons = keep
        L = self.handle.n_layers
        b = self.handle.bridge
        total = 0.0
        with H.prepared(self.handle, flags=False), torch.no_grad():
            for ch, corr in self.states:
                sub = ch.batch

                def patch(n: str, k: torch.Tensor, corr: dict[str, torch.Tensor] = corr) -> Any:
                    def fn(x: torch.Tensor, hook: Any) -> torch.Tensor:
                        kk = k.to(x.device)[:, None] if x.dim() == 4 else k.to(x.device)
                        return torch.where(kk, x, corr[n])

                    return fn

                hooks = [(f"blocks.{ly}.attn.hook_z", patch(f"blocks.{ly}.attn.hook_z", heads[ly])) for ly in range(L)
                         if not bool(heads[ly].all())]
                hooks += [(f"blocks.{ly}.mlp.hook_post", patch(f"blocks.{ly}.mlp.hook_post", neurons[ly]))
                          for ly in range(L) if not bool(neurons[ly].all())]
                with H.installed(b, hooks):
                    ll = b(sub.clean)[torch.arange(len(sub)), sub.last]
                total += ch.weight * float(ch.metric(ll))
        return total

    def faithfulness(self, keep: Keep) -> float:
        gap = self.clean - self.corrupt
        if abs(gap) < 1e-8:
            raise CircuitForgeError(f"clean and corrupt metric are equal ({self.clean:.4g}); faithfulness is undefined")
        return (self.metric(keep) - self.corrupt) / gap


def top_units(graph: NeuronGraph, n: int) -> Keep:
    """Keep masks of the ``n`` highest-|score| units (heads and neurons ranked together)."""
    flat = graph.flat()
    ok = ~flat.isnan()
    n = max(0, min(n, int(ok.sum())))
    sel = torch.zeros(flat.shape, dtype=torch.bool)
    if n:
        sel[torch.topk(torch.where(ok, flat.abs(), torch.tensor(-1.0)), n).indices] = True
    nh = graph.head_scores.numel()
    return sel[:nh].view(graph.head_scores.shape), sel[nh:].view(graph.neuron_scores.shape)


def unit_weights(handle: ModelHandle) -> tuple[int, int]:
    """``(weights per head, weights per neuron)`` a circuit edit touches: a head's q rows and o columns plus
    its whole KV group's k/v rows (an upper bound: the group is shared), a neuron's gate/up rows and down
    column (GPT-2: c_fc column and bias, c_proj row)."""
    dh, d = handle.d_head, handle.d_model
    neuron = 3 * d if handle.family == "llama" else 2 * d + 1
    return 4 * dh * d, neuron


def budget_units(graph: NeuronGraph, head_weights: int, neuron_weights: int, budget: int) -> Keep:
    """The units with the largest ``|score|`` per weight whose weights add up to at most ``budget``
    (greedy in that order; a unit that does not fit is skipped, smaller ones after it may still fit)."""
    flat = graph.flat()
    nh = graph.head_scores.numel()
    cost = torch.cat([torch.full((nh,), float(head_weights)), torch.full((flat.numel() - nh,), float(neuron_weights))])
    density = torch.where(flat.isnan(), torch.tensor(-1.0), flat.abs() / cost)
    sel = torch.zeros(flat.shape, dtype=torch.bool)
    used = 0.0
    for i in torch.argsort(density, descending=True, stable=True).tolist():
        if density[i] < 0:
            break
        if used + float(cost[i]) <= budget:
            sel[i] = True
            used += float(cost[i])
    return sel[:nh].view(graph.head_scores.shape), sel[nh:].view(graph.neuron_scores.shape)


def contrast_graph(forget: NeuronGraph, retain: NeuronGraph, weight: float) -> NeuronGraph:
    """Selection scores specific to the forget task: ``s_u = |f_u| / Σ|f| − weight · |r_u| / Σ|r|`` (each
    unit's share of the forget attribution minus ``weight`` times its share of the retain attribution,
    both graphs of the same model and units); units with ``s_u ≤ 0`` — at least as important to the retain
    rows, relative to the rest, as to the forget rows — become NaN (never selected). The returned graph's
    scores are these non-negative selection scores, not attributions (``method`` says so)."""
    if forget.head_scores.shape != retain.head_scores.shape or forget.neuron_scores.shape != retain.neuron_scores.shape:
        raise CircuitForgeError("forget and retain neuron graphs must score the same units")
    if weight < 0:
        raise CircuitForgeError(f"the contrast weight must be >= 0, not {weight}")

    def share(g: NeuronGraph) -> torch.Tensor:
        a = torch.nan_to_num(g.flat(), nan=0.0).abs()
        total = float(a.sum())
        if total <= 0:
            raise CircuitForgeError("a neuron graph with no nonzero score cannot be contrasted")
        return a / total

    s = share(forget) - weight * share(retain)
    s = torch.where(forget.flat().isnan() | (s <= 0), torch.tensor(float("nan")), s)
    nh = forget.head_scores.numel()
    return NeuronGraph(s[:nh].view(forget.head_scores.shape), s[nh:].view(forget.neuron_scores.shape),
                       method=f"contrast({forget.method})",
                       settings={**forget.settings, "contrast_weight": weight, "contrast_task": retain.task},
                       model=forget.model, task=forget.task, clean_metric=forget.clean_metric,
                       corrupt_metric=forget.corrupt_metric)


def budget_neuron_circuit(handle: ModelHandle, task: Task, max_weight_share: float, faithfulness: float = 0.8,
                          method: str = "eap-ig", ig_steps: int = 3, baselines: bool = True, seed: int = 0,
                          batch_size: int | None = 32, contrast: Task | None = None,
                          contrast_weight: float = 1.0) -> Circuit:
    """The heads and neurons with the largest ``|score|`` per weight within ``max_weight_share`` of the
    linear weights (:func:`budget_units`), with its measured node-ablation faithfulness (``reached`` is
    whether it meets ``faithfulness``; the message says which) and same-size baselines.

    This is the *edit set* for surgery when the minimal faithful circuit is most of the model: on
    SmolLM2-135M the circuit at faithfulness 0.8 holds 224 of 270 heads and 18,238 of 46,080 neurons
    (50% of the linear weights); fact recall there is not sparse under node ablation.

    With ``contrast`` (rows the edit must spare, e.g. untargeted facts of the same domain; counterfactual
    corrupt prompts needed) units are ranked by :func:`contrast_graph` of the two attributions instead of
    the forget |score|, so units that carry the contrast rows as much as the forget rows are left out."""
    from circuitforge.models.weights import linear_weight_count

    graph = attribute_neurons(handle, task, method=method, ig_steps=ig_steps, batch_size=batch_size)
    if contrast is not None:
        other = attribute_neurons(handle, contrast, method=method, ig_steps=ig_steps, batch_size=batch_size)
        graph = contrast_graph(graph, other, contrast_weight)
    hw, nw = unit_weights(handle)
    n_linear = linear_weight_count(handle)
    keep = budget_units(graph, hw, nw, int(max_weight_share * n_linear))
    nh, nn_ = int(keep[0].sum()), int(keep[1].sum())
    if nh + nn_ == 0:
        raise CircuitForgeError(f"no head or neuron fits in {max_weight_share:.2%} of the linear weights")
    ev = NeuronEvaluator(handle, task, graph.settings.get("metric"), batch_size)
    f = ev.faithfulness(keep)
    sel: dict[str, Any] = {"kind": "budget", "target": faithfulness, "max_weight_share": max_weight_share,
                           "weight_share_bound": (nh * hw + nn_ * nw) / n_linear}
    if contrast is not None:
        sel["contrast"] = {"weight": contrast_weight, "task": contrast.identity(),
                           "excluded_units": int(graph.flat().isnan().sum())}
    circ = to_circuit(handle, graph, keep, sel)
    circ.faithfulness, circ.reached = f, f >= faithfulness
    circ.curve = [{"n": nh + nn_, "n_heads": nh, "n_neurons": nn_, "faithfulness": f}]
    circ.message = (f"{nh} heads + {nn_} neurons within {max_weight_share:.1%} of the linear weights: "
                    f"faithfulness {f:.3f} " + (f">= {faithfulness}" if circ.reached else f"(below the {faithfulness} target)"))
    circ.clean_metric, circ.corrupt_metric = ev.clean, ev.corrupt
    if baselines:
        rnd = [ev.faithfulness(random_units(tuple(keep[0].shape), tuple(keep[1].shape), nh, nn_, seed + i))  # type: ignore[arg-type]
               for i in range(3)]
        circ.baselines = {"n_heads": nh, "n_neurons": nn_, "random": sum(rnd) / len(rnd), "random_runs": rnd,
                          "weight_magnitude": ev.faithfulness(magnitude_units(handle, nh, nn_))}
    return circ


def random_units(shape_h: tuple[int, int], shape_n: tuple[int, int], n_heads: int, n_neurons: int, seed: int) -> Keep:
    """``n_heads`` heads and ``n_neurons`` neurons drawn uniformly (seeded)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.zeros(shape_h[0] * shape_h[1], dtype=torch.bool)
    h[torch.randperm(h.numel(), generator=g)[:n_heads]] = True
    m = torch.zeros(shape_n[0] * shape_n[1], dtype=torch.bool)
    m[torch.randperm(m.numel(), generator=g)[:n_neurons]] = True
    return h.view(shape_h), m.view(shape_n)


def magnitude_units(handle: ModelHandle, n_heads: int, n_neurons: int) -> Keep:
    """The ``n_heads`` heads and ``n_neurons`` neurons with the largest weight norm (Frobenius norm of
    their parameter slices: q rows + o columns; gate/up rows + down column)."""
    L, Hh, D = handle.n_layers, handle.n_heads, handle.d_mlp
    params = handle.named_parameters()
    hn = torch.tensor([[sum(float((p.view.float() ** 2).sum()) for p in component_params(handle, f"a{ly}.h{h}", params))
                        for h in range(Hh)] for ly in range(L)])
    rows = []
    for ly in range(L):
        if handle.family == "llama":
            pre = f"model.layers.{ly}.mlp."
            sq = (params[pre + "gate_proj.weight"].detach() ** 2).sum(1) + (params[pre + "up_proj.weight"].detach() ** 2).sum(1)
            sq = sq + (params[pre + "down_proj.weight"].detach() ** 2).sum(0)
        else:
            pre = f"transformer.h.{ly}.mlp."
            sq = (params[pre + "c_fc.weight"].detach() ** 2).sum(0) + (params[pre + "c_proj.weight"].detach() ** 2).sum(1)
        rows.append(sq.float())
    nn_ = torch.stack(rows)
    h = torch.zeros(L * Hh, dtype=torch.bool)
    h[torch.topk(hn.flatten(), n_heads).indices] = True
    m = torch.zeros(L * D, dtype=torch.bool)
    m[torch.topk(nn_.flatten(), n_neurons).indices] = True
    return h.view(L, Hh), m.view(L, D)


def to_circuit(handle: ModelHandle, graph: NeuronGraph, keep: Keep, selection: dict[str, Any]) -> Circuit:
    """A :class:`Circuit` for a (heads, neurons) keep pair (module docstring)."""
    heads, neurons = keep
    head_ids = [f"a{ly}.h{h}" for ly, h in heads.nonzero().tolist()]
    per_layer: dict[str, list[int]] = {}
    for ly, i in neurons.nonzero().tolist():
        per_layer.setdefault(f"m{ly}", []).append(int(i))
    lay = layout_of(handle)
    edges = edges_of(lay, nodes_to_keep(lay, set(head_ids) | set(per_layer)))
    summary = [{"layer": int(k[1:]), "n_neurons": len(v),
                "score_sum": float(graph.neuron_scores[int(k[1:]), v].nansum())} for k, v in per_layer.items()]
    return Circuit(
        edges=edges, model=dict(graph.model), task=dict(graph.task), method={"name": graph.method, **graph.settings},
        corruption="counterfactual", metric=str(graph.settings.get("metric", "logit_diff")),
        selection={**selection, "level": "neuron", "ablation": "node", "heads": head_ids, "neurons": per_layer,
                   "neurons_per_layer": summary, "n_heads": len(head_ids), "n_neurons": int(neurons.sum())},
        clean_metric=graph.clean_metric, corrupt_metric=graph.corrupt_metric,
    )


def is_neuron_circuit(circuit: Any) -> bool:
    sel = getattr(circuit, "selection", None)
    return isinstance(sel, dict) and sel.get("level") == "neuron"


def edit_nodes(circuit: Any) -> list[str]:
    """The finest-resolution component ids of a circuit: for a neuron-level circuit its heads, their KV
    groups and its neurons (``m{L}.n{I}``); otherwise ``circuit.nodes`` (heads, KV groups, whole MLPs)."""
    if not is_neuron_circuit(circuit):
        return sorted(circuit.nodes)
    sel = circuit.selection
    out = set(sel.get("heads", []))
    g = int(circuit.model["n_heads"]) // int(circuit.model["n_kv_heads"])
    for h in sel.get("heads", []):
        _, layer, idx = parse_node(h)
        assert idx is not None
        out.add(f"a{layer}.kv{idx // g}")
    for m, idx_list in sel.get("neurons", {}).items():
        out.update(f"{m}.n{i}" for i in idx_list)
    return sorted(out)


def minimal_neuron_circuit(
    handle: ModelHandle,
    task: Task,
    faithfulness: float = 0.8,
    graph: NeuronGraph | None = None,
    method: str = "eap-ig",
    ig_steps: int = 3,
    metric: str | MetricFn | None = None,
    batch_size: int | None = 32,
    baselines: bool = True,
    stability: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Circuit:
    """The smallest top-n (heads + neurons) circuit whose node-ablation faithfulness reaches
    ``faithfulness``; its curve, baselines and (optionally) stability across task halves as evidence.
    ``reached`` is False (and ``message`` says so) when no size reaches the target."""
    if graph is None:
        graph = attribute_neurons(handle, task, metric=metric, method=method, ig_steps=ig_steps, batch_size=batch_size)
    say = progress or (lambda s: None)
    ev = NeuronEvaluator(handle, task, metric if metric is not None else graph.settings.get("metric"), batch_size)
    total = int((~graph.flat().isnan()).sum())
    if total == 0:
        raise CircuitForgeError("the neuron graph has no measured units to select from")
    curve: dict[int, dict[str, Any]] = {}

    def probe(n: int) -> float:
        if n not in curve:
            k = top_units(graph, n)
            curve[n] = {"n": n, "n_heads": int(k[0].sum()), "n_neurons": int(k[1].sum()), "faithfulness": ev.faithfulness(k)}
            say(f"n={n}: {curve[n]['n_heads']} heads + {curve[n]['n_neurons']} neurons, faithfulness {curve[n]['faithfulness']:.3f}")
        return float(curve[n]["faithfulness"])

    best, reached, message = choose_size(probe, curve, total, faithfulness,
                                         lambda p: f"{p['n_heads']} heads + {p['n_neurons']} neurons")
    keep = top_units(graph, best)
    circ = to_circuit(handle, graph, keep, {"kind": "minimal", "target": faithfulness, "n": best, "n_total": total})
    circ.faithfulness = float(curve[best]["faithfulness"])
    circ.curve = [curve[k] for k in sorted(curve)]
    circ.reached, circ.message = reached, message
    circ.clean_metric, circ.corrupt_metric = ev.clean, ev.corrupt
    nh, nn_ = int(keep[0].sum()), int(keep[1].sum())
    if baselines:
        rnd = [ev.faithfulness(random_units(tuple(keep[0].shape), tuple(keep[1].shape), nh, nn_, seed + i))  # type: ignore[arg-type]
               for i in range(3)]
        circ.baselines = {"n_heads": nh, "n_neurons": nn_, "random": sum(rnd) / len(rnd), "random_runs": rnd,
                          "weight_magnitude": ev.faithfulness(magnitude_units(handle, nh, nn_))}
    if stability:
        circ.stability = unit_stability(handle, task, best, graph.method, ig_steps, metric, batch_size)
    say(message)
    return circ


def unit_stability(handle: ModelHandle, task: Task, n: int, method: str = "eap-ig", ig_steps: int = 3,
                   metric: str | MetricFn | None = None, batch_size: int | None = 32) -> dict[str, Any]:
    """Jaccard of the top-``n`` unit sets and Spearman of all unit scores between the even/odd halves."""
    from circuitforge.circuits.stability import jaccard, spearman

    a, b = task.halves()
    ga = attribute_neurons(handle, a, metric=metric, method=method, ig_steps=ig_steps, batch_size=batch_size)
    gb = attribute_neurons(handle, b, metric=metric, method=method, ig_steps=ig_steps, batch_size=batch_size)
    ids = ga.units()

    def top(g: NeuronGraph) -> set[str]:
        k = torch.cat([x.flatten() for x in top_units(g, n)])
        return {ids[i] for i in k.nonzero().flatten().tolist()}

    return {"n_units": n, "split": "even/odd", "jaccard": jaccard(top(ga), top(gb)), "spearman": spearman(ga.flat(), gb.flat())}


@dataclass(frozen=True)
class NeuronCircuitSearch(CircuitSearch):
    """How to find a minimal faithful circuit at neuron resolution: :class:`~circuitforge.circuits.CircuitSearch`
    (same fields, validation, rows and matching) whose :meth:`find` selects heads and individual MLP neurons
    by node-ablation faithfulness (:func:`minimal_neuron_circuit`). Default EAP-IG steps: 3."""

    ig_steps: int = 3
    max_weight_share: float | None = None
    """None: the minimal faithful circuit. A share in (0, 1]: the units with the largest |score| per weight
    within that share of the linear weights (:func:`budget_neuron_circuit`), faithfulness measured."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_weight_share is not None and not 0 < self.max_weight_share <= 1:
            raise ValueError("max_weight_share must lie in (0, 1] (or None)")

    def find(self, handle: ModelHandle, task: Task, progress: Callable[[str], None] | None = None, *,
             contrast: Task | None = None, contrast_weight: float = 1.0) -> Circuit:
        """The circuit on :meth:`task`'s rows of ``task``; with ``contrast`` (budgeted search only) the units
        are ranked against those rows' attribution (:func:`contrast_graph`)."""
        rows = self.task(task)
        if len(rows) == 0:
            raise CircuitForgeError("the circuit search needs at least one task row")
        if contrast is not None and self.max_weight_share is None:
            raise CircuitForgeError("a contrasted neuron circuit needs max_weight_share (the budgeted search)")
        if self.max_weight_share is not None:
            c = budget_neuron_circuit(handle, rows, self.max_weight_share, faithfulness=self.faithfulness,
                                      method=self.method, ig_steps=self.ig_steps, baselines=self.baselines,
                                      contrast=contrast, contrast_weight=contrast_weight)
        else:
            c = minimal_neuron_circuit(handle, rows, faithfulness=self.faithfulness, method=self.method,
                                       ig_steps=self.ig_steps, baselines=self.baselines, progress=progress)
        c.selection["search"] = {"level": "neuron", **self.to_dict()}
        return c

    def matches(self, circuit: Circuit, handle: ModelHandle, task: Task) -> bool:
        share = circuit.selection.get("search", {}).get("max_weight_share")
        return (is_neuron_circuit(circuit) and share == self.max_weight_share and "contrast" not in circuit.selection
                and super().matches(circuit, handle, task))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NeuronCircuitSearch":
        return cls(**{k: v for k, v in d.items() if k != "level"})
