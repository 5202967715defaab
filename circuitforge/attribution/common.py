"""Shared pieces of the attribution methods: chunking the task, corrupted writer values, and turning
writer differences and reader gradients into node and edge scores."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from circuitforge.attribution import hooks as H
from circuitforge.attribution.corruption import PromptBatch
from circuitforge.attribution.graph import Layout, layout_of
from circuitforge.attribution.metrics import MetricFn, prime, reduce
from circuitforge.models.handle import ModelHandle


@dataclass
class Chunk:
    """A slice of the task, its weight in the task mean (rows / all rows) and a scalar metric on it."""

    batch: PromptBatch
    weight: float
    metric: Callable[[torch.Tensor], torch.Tensor]


def chunks(batch: PromptBatch, metric: MetricFn, batch_size: int | None) -> Iterator[Chunk]:
    n = len(batch)
    bs = batch_size or n
    for start in range(0, n, bs):
        sub = batch.rows(slice(start, min(n, start + bs)))
        yield Chunk(sub, len(sub) / n, _bind(metric, sub))


def _bind(metric: MetricFn, sub: PromptBatch) -> Callable[[torch.Tensor], torch.Tensor]:
    def m(ll: torch.Tensor) -> torch.Tensor:
        return reduce(metric(ll, sub))

    return m


def per_copy_metric(metric: MetricFn, sub: PromptBatch, last_logits: torch.Tensor) -> list[float]:
    """Metric of each stacked copy of ``sub`` in ``last_logits`` (``[copies*batch, vocab]``)."""
    b = len(sub)
    return [float(reduce(metric(last_logits[i * b : (i + 1) * b], sub))) for i in range(last_logits.shape[0] // b)]


def mean_writers(handle: ModelHandle, batch: PromptBatch, batch_size: int | None) -> Float[torch.Tensor, "writers 1 1 d_model"]:
    """Mean clean output of every writer over all real tokens of the task."""
    lay = layout_of(handle)
    total = torch.zeros(len(lay.writers), handle.d_model)
    count = 0
    n = len(batch)
    bs = batch_size or n
    for start in range(0, n, bs):
        sub = batch.rows(slice(start, min(n, start + bs)))
        out = H.run(handle, sub.clean, sub.last, capture=True)
        assert out.writers is not None
        v = sub.valid.to(out.writers.dtype)
        total += torch.einsum("wbsd,bs->wd", out.writers.float(), v.float())
        count += int(sub.valid.sum())
    return (total / count)[:, None, None, :]


def zero_writers(handle: ModelHandle) -> Float[torch.Tensor, "writers 1 1 d_model"]:
    return torch.zeros(len(layout_of(handle).writers), 1, 1, handle.d_model)


def ablation_values(handle: ModelHandle, batch: PromptBatch, batch_size: int | None) -> Float[torch.Tensor, "writers 1 1 d_model"] | None:
    """What a patched-out writer is replaced with: the task mean (``corruption="mean"``), zeros
    (``"zero"``), or ``None`` for counterfactual corruption (the corrupt run's own values)."""
    if batch.corruption == "mean":
        return mean_writers(handle, batch, batch_size)
    if batch.corruption == "zero":
        return zero_writers(handle)
    return None


@dataclass
class Scores:
    """What a method computes: task-mean node/edge scores, optional per-row scores (each row's own
    attribution; their mean over rows is the task score), and the clean/corrupt metric."""

    node: torch.Tensor
    edge: torch.Tensor | None
    clean_metric: float
    corrupt_metric: float
    row_node: torch.Tensor | None = None
    row_edge: torch.Tensor | None = None
    memory: dict[str, Any] | None = None
    """the rows-per-pass plan under a memory budget (:func:`circuitforge.attribution.memory.budgeted`)"""


@dataclass
class ChunkState:
    """Clean/corrupt writer outputs of one chunk, the clean/corrupt metric and the clean last logits."""

    clean_writers: torch.Tensor
    corr_writers: torch.Tensor
    clean_metric: float
    corrupt_metric: float


def clean_and_corrupt(handle: ModelHandle, chunk: Chunk, metric: MetricFn, ablation: torch.Tensor | None) -> ChunkState:
    """No-grad clean run (capturing writers, priming the metric) and the corrupt values: the corrupt
    run for counterfactual corruption, else ``ablation`` with the metric of the fully ablated graph."""
    sub = chunk.batch
    c = H.run(handle, sub.clean, sub.last, capture=True)
    prime(metric, c.last_logits)
    clean_metric = float(chunk.metric(c.last_logits))
    assert c.writers is not None
    if sub.corrupt is not None:
        k = H.run(handle, sub.corrupt, sub.last, metric=chunk.metric, capture=True)
        assert k.writers is not None and k.metric is not None
        return ChunkState(c.writers, k.writers, clean_metric, k.metric)
    assert ablation is not None
    return ChunkState(c.writers, ablation, clean_metric, ablated_metric(handle, chunk, ablation, None))


def ablated_metric(handle: ModelHandle, chunk: Chunk, corr: torch.Tensor, keep: torch.Tensor | None) -> float:
    """Metric with every edge outside ``keep`` (None: all edges) patched to its corrupted value."""
    lay = layout_of(handle)
    sub = chunk.batch
    if keep is None:
        keep = torch.zeros(len(lay.writers), len(lay.readers), dtype=torch.bool)
    p = H.EdgePatcher(lay, keep, corr, (*sub.clean.shape, handle.d_model))
    out = H.run(handle, sub.clean, sub.last, metric=chunk.metric, writer_fn=p.writer, reader_fn=p.reader)
    assert out.metric is not None
    return out.metric


def node_scores(lay: Layout, delta: torch.Tensor, grads: list[torch.Tensor]) -> Float[torch.Tensor, "writers batch"]:
    """Per-row node scores ``Σ_{pos,d} Δa_w · ∂M/∂a_w`` with ``∂M/∂a_w`` = the sum of the gradients of
    every reader downstream of ``w`` (suffix sums over execution time), shape ``[writers, batch]``."""
    n_t = 2 * lay.n_layers + 1
    shape = grads[0].shape[1:]
    per_time = [torch.zeros(shape, dtype=grads[0].dtype) for _ in range(n_t)]
    for slot, g in zip(H.reader_slots(lay), grads, strict=True):
        t = lay.reader_time[slot.start]
        per_time[t] = per_time[t] + g.sum(0)
    suffix = [torch.zeros(shape, dtype=grads[0].dtype) for _ in range(n_t + 1)]
    for t in range(n_t - 1, -1, -1):
        suffix[t] = suffix[t + 1] + per_time[t]
    wt = torch.tensor(lay.writer_time)
    out = torch.zeros(len(lay.writers), shape[0], dtype=grads[0].dtype)
    for t in range(-1, n_t - 1):
        idx = (wt == t).nonzero().flatten()
        if len(idx):
            out[idx] = torch.einsum("wbsd,bsd->wb", delta[idx], suffix[t + 1])
    return out


def edge_scores(lay: Layout, delta: torch.Tensor, grads: list[torch.Tensor], per_row: bool) -> torch.Tensor:
    """Edge scores ``Σ_{pos,d} Δa_w · ∂M/∂(input of r)``: ``[writers, readers]`` (or ``[batch, writers,
    readers]`` with ``per_row``); non-upstream pairs are 0."""
    W, R, B = len(lay.writers), len(lay.readers), delta.shape[1]
    out = torch.zeros((B, W, R) if per_row else (W, R), dtype=delta.dtype)
    for slot, g in zip(H.reader_slots(lay), grads, strict=True):
        n = lay.n_up(slot.start)
        sl = slice(slot.start, slot.start + slot.count)
        if per_row:
            out[:, :n, sl] = torch.einsum("wbsd,rbsd->bwr", delta[:n], g)
        else:
            out[:n, sl] = delta[:n].flatten(1) @ g.flatten(1).T
    return out


def edge_scores_of(lay: Layout, delta: torch.Tensor, grads: list[torch.Tensor], w: torch.Tensor,
                   r: torch.Tensor) -> Float[torch.Tensor, "batch writers readers"]:
    """Per-row scores of the edges ``(w[k], r[k])`` only, as :func:`edge_scores` with ``per_row`` gives
    them, in a ``[batch, writers, readers]`` tensor that is 0 elsewhere (and for non-upstream pairs). Costs
    ``k`` dot products per row instead of every writer × reader pair."""
    W, R, B = len(lay.writers), len(lay.readers), delta.shape[1]
    out = torch.zeros(B, W, R, dtype=delta.dtype)
    for slot, g in zip(H.reader_slots(lay), grads, strict=True):
        inside = (r >= slot.start) & (r < slot.start + slot.count) & (w < lay.n_up(slot.start))
        if not bool(inside.any()):
            continue
        ws, rs = w[inside], r[inside]
        out[:, ws, rs] = torch.einsum("kbsd,kbsd->bk", delta[ws], g[rs - slot.start])
    return out


class Accumulator:
    """Sums chunk results weighted by the chunk's share of rows."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {}
        self.rows: dict[str, list[torch.Tensor]] = {}

    def add(self, key: str, value: Any, weight: float) -> None:
        v = value * weight
        self.sums[key] = v if key not in self.sums else self.sums[key] + v

    def add_rows(self, key: str, value: torch.Tensor) -> None:
        self.rows.setdefault(key, []).append(value)

    def get(self, key: str) -> Any:
        return self.sums.get(key)

    def cat(self, key: str) -> torch.Tensor | None:
        return torch.cat(self.rows[key], 0) if key in self.rows else None
