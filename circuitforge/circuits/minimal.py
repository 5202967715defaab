"""The faithfulness curve over circuit sizes and the minimal circuit meeting a faithfulness target.

Edges are ranked by ``|score|`` of an attribution graph; the circuit of size n is the top-n edges,
pruned of dangling parts. Sizes are probed on a doubling grid and the crossing is then refined by
bisection, so a SmolLM2 graph (~70k edges) needs ~30 ablation passes. The curve is kept as evidence;
when no size reaches the target the result says so (``reached=False`` and a message) and holds the most
faithful circuit seen. Beside the chosen circuit: same-size random and weight-magnitude circuits'
faithfulness, and (optionally) its stability across task halves and seeds.
"""

from collections.abc import Callable
from typing import Any

from circuitforge.attribution.api import attribute
from circuitforge.attribution.graph import Graph
from circuitforge.attribution.metrics import MetricFn
from circuitforge.circuits.circuit import Circuit
from circuitforge.circuits.faithfulness import Evaluator
from circuitforge.circuits.select import prune, random_keep, ranked_keep, select_top_n, weight_keep
from circuitforge.circuits.stability import stability as stability_fn
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


def _units(graph: Graph) -> int:
    return int(graph.mask.sum()) if graph.edge_scores is not None else int((~graph.node_scores[1:].isnan()).sum())


def faithfulness_curve(
    handle: ModelHandle,
    task: Task,
    graph: Graph,
    sizes: list[int] | None = None,
    corruption: str | None = None,
    metric: str | MetricFn | None = None,
    batch_size: int | None = 32,
    evaluator: Evaluator | None = None,
) -> list[dict[str, Any]]:
    """Faithfulness of the top-n circuits for ``sizes`` (default a doubling grid up to all edges)."""
    ev = evaluator or Evaluator(handle, task, corruption or str(graph.settings.get("corruption", "counterfactual")),
                                metric if metric is not None else graph.settings.get("metric"), batch_size)
    total = _units(graph)
    sizes = sizes or _grid(total)
    return [_point(ev, graph, n) for n in sizes]


def _grid(total: int) -> list[int]:
    out, n = [], 1
    while n < total:
        out.append(n)
        n *= 2
    return [*out, total]


def smallest_reaching(probe: Callable[[int], float], total: int, target: float) -> int | None:
    """The smallest size ``n`` ≤ ``total`` with ``probe(n) ≥ target``: probed on a doubling grid, then refined
    by bisection inside the first bracket that crosses (assuming a local crossing); ``None`` if no grid size
    reaches the target. ``probe`` should cache its results (sizes may be asked twice)."""
    lo, hi = 0, None
    for n in _grid(total):
        if probe(n) >= target:
            hi = n
            break
        lo = n
    if hi is None:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if probe(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def choose_size(probe: Callable[[int], float], curve: dict[int, dict[str, Any]], total: int, target: float,
                describe: Callable[[dict[str, Any]], str]) -> tuple[int, bool, str]:
    """``(size, reached, message)``: the smallest size reaching ``target`` (:func:`smallest_reaching`), or
    the most faithful size probed when none does (``reached=False``, and the message says so). ``curve``
    holds the probed points (``probe`` fills it); ``describe(point)`` names a circuit ("705 edges")."""
    hi = smallest_reaching(probe, total, target)
    if hi is not None:
        p = curve[hi]
        return hi, True, f"{describe(p)} reach faithfulness {p['faithfulness']:.3f} >= {target}"
    best = max(curve, key=lambda k: curve[k]["faithfulness"])
    p = curve[best]
    return best, False, (f"no circuit reaches faithfulness {target}: the best probed ({describe(p)}) reaches "
                         f"{p['faithfulness']:.3f}")


def _point(ev: Evaluator, graph: Graph, n: int) -> dict[str, Any]:
    keep = prune(graph.layout, ranked_keep(graph, n))
    return {"n": n, "n_edges": int(keep.sum()), "faithfulness": ev.faithfulness(keep)}


def minimal_circuit(
    handle: ModelHandle,
    task: Task,
    faithfulness: float = 0.8,
    graph: Graph | None = None,
    method: str = "eap",
    level: str = "edge",
    corruption: str = "counterfactual",
    metric: str | MetricFn | None = None,
    batch_size: int | None = 32,
    baselines: bool = True,
    stability: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    **attribute_kw: Any,
) -> Circuit:
    """The smallest top-n circuit (by |score| of ``graph``, computed with ``method`` if not given)
    whose faithfulness reaches ``faithfulness``; its curve, baselines and stability as evidence.

    ``Circuit.reached`` is False (and ``Circuit.message`` says so) when no size reaches the target; the
    circuit returned is then the most faithful one probed.
    """
    if graph is None:
        graph = attribute(handle, task, metric=metric, method=method, level=level, corruption=corruption,
                          batch_size=batch_size, **attribute_kw)
    corruption = str(graph.settings.get("corruption", corruption))
    metric_used = metric if metric is not None else graph.settings.get("metric")
    say = progress or (lambda s: None)
    ev = Evaluator(handle, task, corruption, metric_used, batch_size)
    total = _units(graph)
    if total == 0:
        raise CircuitForgeError("the graph has no measured edges or nodes to select from")
    curve: dict[int, dict[str, Any]] = {}

    def probe(n: int) -> float:
        if n not in curve:
            curve[n] = _point(ev, graph, n)
            say(f"n={n}: {curve[n]['n_edges']} edges, faithfulness {curve[n]['faithfulness']:.3f}")
        return float(curve[n]["faithfulness"])

    best, reached, message = choose_size(probe, curve, total, faithfulness, lambda p: f"{p['n_edges']} edges")
    circ = select_top_n(graph, best)
    circ.faithfulness = float(curve[best]["faithfulness"])
    circ.curve = [curve[k] for k in sorted(curve)]
    circ.reached = reached
    circ.message = message
    circ.selection.update(kind="minimal", target=faithfulness, n=best, n_total=total)
    circ.clean_metric, circ.corrupt_metric = ev.clean, ev.corrupt
    lay = graph.layout
    k = circ.n_edges
    if baselines:
        rnd = [ev.faithfulness(random_keep(lay, k, seed + i)) for i in range(3)]
        circ.baselines = {
            "n_edges": k,
            "random": sum(rnd) / len(rnd), "random_runs": rnd,
            "weight_magnitude": ev.faithfulness(weight_keep(handle, lay, k)),
        }
    if stability:
        circ.stability = stability_fn(handle, task, k, method=graph.method, level=graph.level,
                                      corruption=corruption, metric=metric, batch_size=batch_size)
    say(message)
    return circ
