"""EAP with integrated gradients (EAP-IG; Hanna, Pezzelle & Belinkov 2024, "Have Faith in Faithfulness:
Going Beyond Circuit Overlap When Finding Model Mechanisms", arXiv:2403.17806; IG: Sundararajan et al. 2017).

Scores as in :mod:`circuitforge.attribution.eap`, with the gradient replaced by its average along a
straight path from the corrupted to the clean state (``ig_steps`` points, midpoint rule α = (k+½)/m):

    edge(w → r) = Σ (a_w^clean − a_w^corr) · (1/m) Σ_k ∂M/∂x_r |_{α_k}

``ig_mode="inputs"`` (Hanna et al.'s default) interpolates only the input embedding (token + position)
between the corrupt and the clean prompt — or the mean/zero embedding under ablation — and runs the model
normally; ``ig_mode="activations"`` sets every writer's output to ``a^corr + α(a^clean − a^corr)`` while
gradients flow through each component at its interpolated input (straight-through), interpolating all
activations at once. Sign convention (denoising): positive = pushes the metric toward the clean answer.
Cost: two forward passes plus ``ig_steps`` forward+backward passes.
"""

from collections.abc import Callable

import torch

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution import memory as M
from circuitforge.attribution.corruption import PromptBatch
from circuitforge.attribution.eap import accumulate, finish
from circuitforge.attribution.graph import layout_of
from circuitforge.attribution.metrics import MetricFn
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


def compute(
    handle: ModelHandle,
    batch: PromptBatch,
    metric: MetricFn,
    level: str = "node",
    ig_steps: int = 5,
    ig_mode: str = "inputs",
    batch_size: int | None = None,
    per_row: bool = False,
    progress: bool = False,
    row_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    memory_budget: int | None = None,
) -> C.Scores:
    """EAP-IG scores (module docstring); ``row_pairs`` and ``memory_budget`` as in
    :func:`circuitforge.attribution.eap.compute`."""
    if ig_steps < 1:
        raise CircuitForgeError(f"ig_steps must be >= 1, not {ig_steps}")
    if ig_mode not in ("inputs", "activations"):
        raise CircuitForgeError(f"ig_mode must be 'inputs' or 'activations', not {ig_mode!r}")
    if memory_budget is not None:
        stream = level == "edge" and not per_row

        def run_rows(b: PromptBatch, bs: int | None) -> C.Scores:
            return _compute(handle, b, metric, level, ig_steps, ig_mode, bs, per_row, row_pairs, stream)

        return M.budgeted(run_rows, batch, memory_budget, handle.device, M.kept_row_bytes(handle, level, per_row))
    return _compute(handle, batch, metric, level, ig_steps, ig_mode, batch_size, per_row, row_pairs, stream=False)


def _compute(handle: ModelHandle, batch: PromptBatch, metric: MetricFn, level: str, ig_steps: int, ig_mode: str,
             batch_size: int | None, per_row: bool, row_pairs: tuple[torch.Tensor, torch.Tensor] | None,
             stream: bool) -> C.Scores:
    """The EAP-IG loop. ``stream`` (edge level, no per-row scores): each path point's reader gradients are
    folded into the edge scores with weight 1/m as the backward pass reaches them
    (:class:`~circuitforge.attribution.memory.EdgeSink`), node scores are the edge scores' row sums, and under
    ``ig_mode="inputs"`` only the input embedding's clean and corrupt values are kept besides Δa."""
    lay = layout_of(handle)
    acc = C.Accumulator()
    alphas = [(k + 0.5) / ig_steps for k in range(ig_steps)]
    with H.prepared(handle):
        ablation = C.ablation_values(handle, batch, batch_size)
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            st = C.clean_and_corrupt(handle, ch, metric, ablation)
            clean_w, corr_w = st.clean_writers, st.corr_writers
            delta = clean_w - corr_w
            if stream:
                if ig_mode == "inputs":  # the other writers run free: only the input slot is interpolated
                    clean_w, corr_w = clean_w[:1].clone(), corr_w[:1].clone()
                    st.clean_writers = st.corr_writers = clean_w
                edges = torch.zeros(len(lay.writers), len(lay.readers))
                sink = M.EdgeSink(lay, edges, 1.0 / ig_steps, delta=delta)
                del delta
                for a in alphas:
                    H.run(handle, sub.clean, sub.last, metric=ch.metric,
                          writer_fn=_interp(clean_w, corr_w, a, ig_mode), grads=True, sink=sink)
                del sink
                acc.add("node", edges.sum(1), ch.weight)
                acc.add("edge", edges, ch.weight)
            else:
                total: list[torch.Tensor] | None = None
                for a in alphas:
                    out = H.run(handle, sub.clean, sub.last, metric=ch.metric,
                                writer_fn=_interp(clean_w, corr_w, a, ig_mode), grads=True)
                    assert out.grads is not None
                    total = out.grads if total is None else [t + g for t, g in zip(total, out.grads, strict=True)]
                    del out
                assert total is not None
                grads = [t / ig_steps for t in total]
                del total
                accumulate(acc, lay, delta, grads, level, per_row, ch.weight, len(sub), row_pairs)
                del delta, grads
            acc.add("clean", st.clean_metric, ch.weight)
            acc.add("corrupt", st.corrupt_metric, ch.weight)
            del st, clean_w, corr_w   # not alive during the next chunk's passes
    return finish(acc, level, per_row)


def _interp(clean_w: torch.Tensor, corr_w: torch.Tensor, a: float, mode: str) -> Callable[[H.Slot, torch.Tensor], torch.Tensor | None]:
    def fn(slot: H.Slot, s: torch.Tensor) -> torch.Tensor | None:
        if mode == "inputs" and slot.kind != "input":
            return None
        sl = slice(slot.start, slot.start + slot.count)
        target = corr_w[sl] + a * (clean_w[sl] - corr_w[sl])
        target = target.expand_as(s)
        return target + (s - s.detach()) if s.requires_grad else target

    return fn
