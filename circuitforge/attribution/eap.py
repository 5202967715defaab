"""Edge attribution patching (EAP; Syed, Rager & Conmy 2023, "Attribution Patching Outperforms
Automated Circuit Discovery", arXiv:2310.10348; node-level attribution patching: Nanda 2023).

First-order Taylor estimate of activation patching, from two forward passes and one backward pass:

    node(w)     = Σ_{row, pos, d} (a_w^clean − a_w^corr) · ∂M/∂a_w
    edge(w → r) = Σ_{row, pos, d} (a_w^clean − a_w^corr) · ∂M/∂x_r

where ``a_w`` is writer w's output, ``x_r`` reader r's input (its private fork of the residual stream),
and ``∂M/∂a_w = Σ_{r downstream of w} ∂M/∂x_r``, so **a writer's outgoing edge scores sum to its node
score**. Sign convention (denoising): positive = restoring the clean value pushes the metric toward the
clean answer. For counterfactual corruption the gradient is taken on the corrupt run (denoising, as in
Syed et al.); for mean/zero ablation no input produces the ablated values, so the gradient is taken on
the clean run (the noising form, ``M_clean − M(w ablated)`` to first order) with the same sign.
"""

from typing import Any

import torch
from jaxtyping import Float

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution import memory as M
from circuitforge.attribution.corruption import PromptBatch
from circuitforge.attribution.graph import Layout, layout_of
from circuitforge.attribution.metrics import MetricFn, NegKL, prime
from circuitforge.models.handle import ModelHandle


def compute(
    handle: ModelHandle,
    batch: PromptBatch,
    metric: MetricFn,
    level: str = "node",
    batch_size: int | None = None,
    per_row: bool = False,
    progress: bool = False,
    row_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    memory_budget: int | None = None,
) -> C.Scores:
    """EAP scores (module docstring) for ``batch``; ``level`` is ``"node"`` or ``"edge"``. ``row_pairs``
    (writer, reader indices): with ``per_row`` at edge level, per-row scores of these edges only.
    ``memory_budget`` (bytes): rows per pass planned to fit it, reader gradients streamed at edge level
    (:mod:`circuitforge.attribution.memory`)."""
    if memory_budget is not None:
        stream = level == "edge" and not per_row

        def run_rows(b: PromptBatch, bs: int | None) -> C.Scores:
            if stream:
                return _compute(handle, b, metric, level, bs, per_row, row_pairs, stream=True)
            return compute(handle, b, metric, level, bs, per_row, progress, row_pairs)

        return M.budgeted(run_rows, batch, memory_budget, handle.device, M.kept_row_bytes(handle, level, per_row))
    if level == "node" and batch.corrupt is not None and H.post_attention_norms(handle) is None:
        return _node_fast(handle, batch, metric, batch_size, per_row)
    return _compute(handle, batch, metric, level, batch_size, per_row, row_pairs, stream=False)


def _compute(handle: ModelHandle, batch: PromptBatch, metric: MetricFn, level: str, batch_size: int | None,
             per_row: bool, row_pairs: tuple[torch.Tensor, torch.Tensor] | None, stream: bool) -> C.Scores:
    """The EAP loop. ``stream`` (edge level, no per-row scores): reader gradients are folded into the edge
    scores as the backward pass reaches them (:class:`~circuitforge.attribution.memory.EdgeSink`; Δa formed
    in the captured buffer, the clean writers released before the gradient pass), and node scores are the
    edge scores' row sums (a writer's outgoing edges sum to its node score)."""
    lay = layout_of(handle)
    acc = C.Accumulator()
    with H.prepared(handle):
        ablation = C.ablation_values(handle, batch, batch_size)
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            edges = torch.zeros(len(lay.writers), len(lay.readers)) if stream else None
            sink: M.EdgeSink | None = None
            if sub.corrupt is not None:
                clean = H.run(handle, sub.clean, sub.last, capture=True)
                prime(metric, clean.last_logits)
                clean_m = float(ch.metric(clean.last_logits))
                clean_w = clean.writers
                assert clean_w is not None
                del clean
                if edges is not None:   # the sink holds the only reference: released once Δa is formed
                    sink, clean_w = M.EdgeSink(lay, edges, clean=clean_w), None
                run = H.run(handle, sub.corrupt, sub.last, metric=ch.metric, capture=True, grads=True, sink=sink)
                assert run.metric is not None
                corr_m = run.metric
                delta = None if clean_w is None or run.writers is None else clean_w - run.writers
            else:
                assert ablation is not None
                if isinstance(metric, NegKL):
                    prime(metric, H.run(handle, sub.clean, sub.last).last_logits)
                if edges is not None:
                    sink = M.EdgeSink(lay, edges, ablation=ablation)
                run = H.run(handle, sub.clean, sub.last, metric=ch.metric, capture=True, grads=True, sink=sink)
                assert run.metric is not None
                clean_m, corr_m = run.metric, C.ablated_metric(handle, ch, ablation, None)
                delta = None if sink is not None or run.writers is None else run.writers - ablation
            if edges is not None:
                del sink
                acc.add("node", edges.sum(1), ch.weight)
                acc.add("edge", edges, ch.weight)
            else:
                assert delta is not None and run.grads is not None
                accumulate(acc, lay, delta, run.grads, level, per_row, ch.weight, len(sub), row_pairs)
            acc.add("clean", clean_m, ch.weight)
            acc.add("corrupt", corr_m, ch.weight)
            del run, delta   # not alive during the next chunk's passes
    return finish(acc, level, per_row)


def accumulate(
    acc: C.Accumulator,
    lay: Layout,
    delta: Float[torch.Tensor, "writers batch pos d_model"],
    grads: list[torch.Tensor],
    level: str,
    per_row: bool,
    weight: float,
    rows: int,
    row_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    rn = C.node_scores(lay, delta, grads)  # [W, B]
    acc.add("node", rn.sum(1), weight)
    if per_row:
        acc.add_rows("row_node", rn.T * rows)
    if level == "edge":
        if per_row and row_pairs is not None:  # per-row scores of the requested edges only
            acc.add("edge", C.edge_scores(lay, delta, grads, per_row=False), weight)
            acc.add_rows("row_edge", C.edge_scores_of(lay, delta, grads, *row_pairs) * rows)
        elif per_row:
            re = C.edge_scores(lay, delta, grads, per_row=True)
            acc.add("edge", re.sum(0), weight)
            acc.add_rows("row_edge", re * rows)
        else:
            acc.add("edge", C.edge_scores(lay, delta, grads, per_row=False), weight)


def finish(acc: C.Accumulator, level: str, per_row: bool) -> C.Scores:
    return C.Scores(
        node=acc.get("node"),
        edge=acc.get("edge") if level == "edge" else None,
        clean_metric=float(acc.get("clean")),
        corrupt_metric=float(acc.get("corrupt")),
        row_node=acc.cat("row_node") if per_row else None,
        row_edge=acc.cat("row_edge") if per_row and level == "edge" else None,
    )



def _node_fast(handle: ModelHandle, batch: PromptBatch, metric: MetricFn, batch_size: int | None,
               per_row: bool) -> C.Scores:
    """Node-level EAP without the per-reader residual copies: gradients are taken directly at the
    writers (``hook_resid_pre`` of block 0, each head's ``hook_z``, ``hook_mlp_out``). A head's score
    ``Δz·∂M/∂z`` equals ``Δresult·∂M/∂result`` because ``result = z·W_O`` is linear in z. Not used for
    models with a norm after attention (Gemma 3), whose head writers are residual shares (:mod:`.hooks`)."""
    L = handle.n_layers
    names = ["blocks.0.hook_resid_pre"]
    for layer in range(L):
        names += [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"]
    acc = C.Accumulator()
    b = handle.bridge
    with H.prepared(handle, flags=False):
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            rows = torch.arange(len(sub))
            clean: dict[str, torch.Tensor] = {}
            corr: dict[str, torch.Tensor] = {}
            leaves: dict[str, torch.Tensor] = {}

            def save(n: str, store: dict[str, torch.Tensor] = clean) -> Any:
                return lambda x, hook: store.__setitem__(n, x.detach().clone())

            def leaf(n: str, store: dict[str, torch.Tensor] = corr, lv: dict[str, torch.Tensor] = leaves) -> Any:
                def fn(x: torch.Tensor, hook: Any) -> torch.Tensor:
                    store[n] = x.detach().clone()
                    lv[n] = torch.zeros_like(x, requires_grad=True)
                    return x + lv[n]

                return fn

            with torch.no_grad(), H.installed(b, [(n, save(n)) for n in names]):
                cl = b(sub.clean)[rows, sub.last]
            prime(metric, cl)
            with torch.enable_grad(), H.installed(b, [(n, leaf(n)) for n in names]):
                m = ch.metric(b(sub.corrupt)[rows, sub.last])
                grads = dict(zip(names, torch.autograd.grad(m, [leaves[n] for n in names]), strict=True))
            parts = [((clean[names[0]] - corr[names[0]]) * grads[names[0]]).sum((1, 2))[None]]
            for n in names[1:]:
                prod = (clean[n] - corr[n]) * grads[n]
                parts.append(prod.sum((1, 3)).T if n.endswith("hook_z") else prod.sum((1, 2))[None])
            rn = torch.cat(parts, 0)  # [W, B]
            acc.add("node", rn.sum(1), ch.weight)
            if per_row:
                acc.add_rows("row_node", rn.T * len(sub))
            acc.add("clean", float(ch.metric(cl)), ch.weight)
            acc.add("corrupt", float(m.detach()), ch.weight)
    return finish(acc, "node", per_row)
