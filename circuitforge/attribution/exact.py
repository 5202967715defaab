"""Exact activation patching — the ground truth the gradient methods approximate (Vig et al. 2020;
Meng et al. 2022; Wang et al. 2022; see also Zhang & Nanda 2024 on best practices).

* node ``w``: counterfactual corruption — run the corrupt prompt with ``w``'s output restored to its
  clean value, ``score = M(patched) − M(corrupt)`` (denoising); mean/zero ablation — run the clean prompt
  with ``w``'s output ablated, ``score = M(clean) − M(patched)`` (noising, same sign).
* edge ``w → r``: counterfactual — run the corrupt prompt with ``x_r += a_w^clean − a_w^corr`` (only that
  reader sees the clean ``w``), ``score = M(patched) − M(corrupt)``; ablation — run the clean prompt with
  ``x_r −= a_w^clean − a_w^abl``, ``score = M(clean) − M(patched)``.

Positive = the component (edge) pushes the metric toward the clean answer. One forward pass per node or
edge; several patches share a pass by stacking copies of the batch. Unmeasured entries are NaN.
"""

from collections.abc import Callable, Sequence

import torch

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution.corruption import PromptBatch
from circuitforge.attribution.graph import layout_of, split_edge
from circuitforge.attribution.metrics import MetricFn
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle

MAX_ROWS = 64  # rows per stacked forward pass


def compute(
    handle: ModelHandle,
    batch: PromptBatch,
    metric: MetricFn,
    level: str = "node",
    nodes: Sequence[str] | None = None,
    edges: Sequence[str] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> C.Scores:
    """Exact patching scores of ``nodes`` (default all writers) or, at edge level, of ``edges``
    (default every edge — one forward pass each, so pass a subset on real models)."""
    lay = layout_of(handle)
    W, R = len(lay.writers), len(lay.readers)
    up = lay.upstream()
    if level == "node":
        targets = [(lay.writer_index(n), -1) for n in (nodes if nodes is not None else lay.writers)]
    else:
        if edges is None:
            pairs = up.nonzero().tolist()
            targets = [(int(w), int(r)) for w, r in pairs]
        else:
            targets = []
            for e in edges:
                s, d = split_edge(e)
                w, r = lay.writer_index(s), lay.reader_index(d)
                if not bool(up[w, r]):
                    raise CircuitForgeError(f"{e}: {s} is not upstream of {d}")
                targets.append((w, r))
    acc = C.Accumulator()
    rslots = H.reader_slots(lay)
    wslots = H.writer_slots(lay)
    from tqdm.auto import tqdm

    with H.prepared(handle):
        ablation = C.ablation_values(handle, batch, batch_size)
        for ch in C.chunks(batch, metric, batch_size):
            sub = ch.batch
            B = len(sub)
            st = C.clean_and_corrupt(handle, ch, metric, ablation)
            denoise = sub.corrupt is not None
            tokens = sub.corrupt if denoise else sub.clean
            assert tokens is not None
            k = max(1, MAX_ROWS // B)
            vals = torch.full((len(targets),), float("nan"))
            bar = tqdm(total=len(targets), disable=not progress, desc=f"exact {level} patching", leave=False)
            for start in range(0, len(targets), k):
                group = targets[start : start + k]
                n = len(group)
                if level == "node":
                    wfn, rfn = _node_patch(group, wslots, st, B, denoise), None
                else:
                    wfn, rfn = None, _edge_patch(group, rslots, st, B, denoise)
                out = H.run(handle, tokens.repeat(n, 1), sub.last.repeat(n), writer_fn=wfn, reader_fn=rfn)
                ms = C.per_copy_metric(metric, sub, out.last_logits)
                base = st.corrupt_metric if denoise else st.clean_metric
                vals[start : start + n] = torch.tensor([(m - base) if denoise else (base - m) for m in ms])
                bar.update(n)
            bar.close()
            acc.add("vals", vals, ch.weight)
            acc.add("clean", st.clean_metric, ch.weight)
            acc.add("corrupt", st.corrupt_metric, ch.weight)
    vals = acc.get("vals")
    node = torch.full((W,), float("nan"))
    edge = None
    if level == "node":
        for (w, _), v in zip(targets, vals.tolist(), strict=True):
            node[w] = v
    else:
        edge = torch.full((W, R), float("nan"))
        edge[~up] = 0.0
        for (w, r), v in zip(targets, vals.tolist(), strict=True):
            edge[w, r] = v
    return C.Scores(node, edge, float(acc.get("clean")), float(acc.get("corrupt")))


def _node_patch(group: list[tuple[int, int]], wslots: list[H.Slot], st: C.ChunkState, B: int,
                denoise: bool) -> Callable[[H.Slot, torch.Tensor], torch.Tensor | None]:
    source = st.clean_writers if denoise else st.corr_writers

    def fn(slot: H.Slot, s: torch.Tensor) -> torch.Tensor | None:
        hits = [(i, w) for i, (w, _) in enumerate(group) if slot.start <= w < slot.start + slot.count]
        if not hits:
            return None
        s = s.clone()
        for i, w in hits:
            s[w - slot.start, i * B : (i + 1) * B] = source[w].expand(B, s.shape[2], s.shape[3])
        return s

    return fn


def _edge_patch(group: list[tuple[int, int]], rslots: list[H.Slot], st: C.ChunkState, B: int,
                denoise: bool) -> Callable[[H.Slot, torch.Tensor], torch.Tensor | None]:
    sign = 1.0 if denoise else -1.0

    def fn(slot: H.Slot, s: torch.Tensor) -> torch.Tensor | None:
        hits = [(i, w, r) for i, (w, r) in enumerate(group) if slot.start <= r < slot.start + slot.count]
        if not hits:
            return None
        s = s.clone()
        for i, w, r in hits:
            d = st.clean_writers[w] - st.corr_writers[w]
            s[r - slot.start, i * B : (i + 1) * B] += sign * d.expand(B, s.shape[2], s.shape[3])
        return s

    return fn
