"""The one entry point: :func:`attribute` (dispatches to ``eap``, ``eap-ig`` or ``exact``)."""

import time
from collections.abc import Sequence
from typing import Any

from circuitforge.attribution import eap, eap_ig, exact
from circuitforge.attribution.corruption import encode_task
from circuitforge.attribution.graph import Graph, layout_of
from circuitforge.attribution.metrics import MetricFn, resolve
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle

METHODS = ("eap", "eap-ig", "exact")


def model_block(handle: ModelHandle) -> dict[str, Any]:
    """Model identity + architecture, as recorded in graph and circuit JSON."""
    ident = handle.identity()
    arch = handle.architecture()
    return {**ident, **arch}  # no local paths in results (source_dir stays on the handle)


def task_block(task: Task) -> dict[str, Any]:
    return {**task.identity(), "source": task.source}


def attribute(
    handle: ModelHandle,
    task: Task,
    metric: str | MetricFn | None = "logit_diff",
    method: str = "eap",
    level: str = "node",
    corruption: str = "counterfactual",
    *,
    ig_steps: int = 5,
    ig_mode: str = "inputs",
    nodes: Sequence[str] | None = None,
    edges: Sequence[str] | None = None,
    batch_size: int | None = 32,
    per_row: bool = False,
    progress: bool = False,
    memory_budget: int | str | None = None,
) -> Graph:
    """Attribution scores of every writer (``level="node"``) or every edge (``level="edge"``).

    Args:
        handle: the model.
        task: a cloze task; with ``corruption="counterfactual"`` every row needs a ``corrupt_prompt`` of
            the same token length as its prompt (else a :class:`CircuitForgeError` names the row).
        metric: ``"logit_diff"`` (answer − corrupt answer, or − mean distractor; averaged over rows),
            ``"logprob"``, ``"kl"`` (−KL to the clean distribution) or ``callable(logits[batch, vocab],
            batch) -> [batch] | scalar`` on the last prompt position.
        method: ``"eap"`` (Syed et al. 2023: 2 forward + 1 backward), ``"eap-ig"`` (Hanna et al. 2024:
            ``ig_steps`` gradient points, ``ig_mode`` ``"inputs"`` or ``"activations"``) or ``"exact"``
            (activation patching, one forward per node; at edge level per edge of ``edges``).
        corruption: ``"counterfactual"`` (the rows' corrupt prompts), ``"mean"`` or ``"zero"`` ablation.
        nodes, edges: for ``exact``: the subset to measure (others are NaN). ``edges`` with ``per_row``
            (eap/eap-ig): only these edges get per-row scores (the others are 0 in ``row_edge_scores``;
            the task-mean ``edge_scores`` stay complete) — per-row scores of every pair cost as much as
            the attribution itself.
        batch_size: rows per forward pass (scores are exact task means whatever the chunking).
        memory_budget: eap/eap-ig: a cap on the attribution's peak tensor memory (bytes, or ``"512MB"``,
            ``"2GB"``; the model's weights not counted). Rows per pass are planned from two measured probe
            passes (``batch_size`` is then ignored) and, at edge level without ``per_row``, reader gradients
            are streamed into the edge scores instead of being kept (:mod:`.memory`). Same scores up to float
            summation order; the plan is recorded in ``settings["memory"]``. A budget one row cannot fit is
            refused.
        per_row: also keep each row's own scores (``Graph.row_node_scores`` ``[rows, writers]`` and, at
            edge level, ``Graph.row_edge_scores`` ``[rows, writers, readers]``); eap/eap-ig only.

    Returns:
        A :class:`Graph`. **Sign convention (denoising):** ``score = (a_clean − a_corr) · ∂M/∂a`` at the
        corrupt run; positive = the component (edge) pushes the metric toward the clean answer. Exact
        patching uses the same sign (``M(corrupt with w clean) − M(corrupt)``). Under mean/zero ablation
        the gradient and the patching are taken from the clean run instead (see ``eap``/``exact``).
    """
    if method not in METHODS:
        raise CircuitForgeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if level not in ("node", "edge"):
        raise CircuitForgeError(f"level must be 'node' or 'edge', not {level!r}")
    if per_row and method == "exact":
        raise CircuitForgeError("per_row scores are available for eap and eap-ig only")
    if memory_budget is not None and method == "exact":
        raise CircuitForgeError("memory_budget applies to eap and eap-ig (exact patching keeps no gradients)")
    from circuitforge.attribution.memory import parse_bytes

    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    metric_name, fn = resolve(metric)
    batch = encode_task(handle, task, corruption)
    t0 = time.perf_counter()
    settings: dict[str, Any] = {"corruption": corruption, "metric": metric_name, "level": level}
    row_pairs = layout_of(handle).edge_index(edges) if per_row and edges is not None and method != "exact" else None
    if method == "eap":
        sc = eap.compute(handle, batch, fn, level, batch_size, per_row, progress, row_pairs=row_pairs,
                         memory_budget=budget)
    elif method == "eap-ig":
        sc = eap_ig.compute(handle, batch, fn, level, ig_steps, ig_mode, batch_size, per_row, progress,
                            row_pairs=row_pairs, memory_budget=budget)
        settings.update(ig_steps=ig_steps, ig_mode=ig_mode)
    else:
        sc = exact.compute(handle, batch, fn, level, nodes, edges, batch_size, progress)
    settings["seconds"] = round(time.perf_counter() - t0, 4)
    if sc.memory is not None:
        settings["memory"] = sc.memory
    lay = layout_of(handle)
    from circuitforge._provenance import versions

    g = Graph(
        writers=lay.writers, readers=lay.readers, node_scores=sc.node, edge_scores=sc.edge,
        method=method, level=level, settings=settings, model=model_block(handle), task=task_block(task),
        clean_metric=sc.clean_metric, corrupt_metric=sc.corrupt_metric, versions=versions(),
    )
    g.row_node_scores = sc.row_node
    g.row_edge_scores = sc.row_edge
    return g

