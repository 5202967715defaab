"""Edge attribution under a memory budget: measuring peak tensor memory, and planning rows per pass.

Edge attribution keeps, per pass of ``b`` rows padded to ``p`` positions, every writer's output difference
Δa (``writers × b × p × d_model``), each reader's gradient (``readers × b × p × d_model`` when collected)
and the autograd graph of the pass. Under a budget (:func:`circuitforge.attribution.attribute` with
``memory_budget=``):

* reader gradients are **streamed**: each reader slot's gradient is folded into the edge scores
  (``Δa[:n] · g``) the moment the backward pass reaches it and then dropped (:class:`EdgeSink`), so the
  ``readers × b × p × d`` block never exists; Δa is formed in place, in the model's dtype;
* the number of rows per pass is **planned from measurement**: the same computation is run on the one
  and the two longest rows, its peak measured (:func:`peak_bytes`), a line ``fixed + rows · per_row`` fitted
  and the largest row count under the budget chosen. A budget one row cannot fit is refused with a one-line
  :class:`~circuitforge.errors.CircuitForgeError` naming the measured need.

"Memory" here is the peak of tensor memory allocated during the computation above what was allocated when
it started (the model's weights are not counted): on CUDA ``torch.cuda.max_memory_allocated``, on the CPU
the running sum of the allocations and frees that ``torch.profiler`` records (``profile_memory=True``; it
slows CPU passes, and cannot be nested). The budgeted run is measured the same way and reported next to
the plan (``peak``, ``within_budget``).
Scores are the same as without a budget up to float summation order (tested on the tiny model).
"""

import re
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from jaxtyping import Float

from circuitforge.attribution import hooks as H
from circuitforge.attribution.common import Scores
from circuitforge.attribution.corruption import PromptBatch
from circuitforge.attribution.graph import Layout
from circuitforge.errors import CircuitForgeError

T = TypeVar("T")

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_bytes(value: int | str) -> int:
    """``"512MB"``, ``"2 GiB"``, ``"800k"`` or an int → bytes (binary units: 1 MB = 2²⁰ bytes)."""
    if isinstance(value, int):
        n = value
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if m is None or m.group(2).lower() not in _UNITS:
            raise CircuitForgeError(f"memory budget {value!r}: expected a size such as 512MB or 2GB")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise CircuitForgeError(f"memory budget must be > 0 bytes, not {value!r}")
    return n


def peak_bytes(fn: Callable[[], T], device: torch.device | str = "cpu") -> tuple[T, int]:
    """Run ``fn()``; return its result and the peak tensor memory it allocated above the starting level
    (module doc), in bytes."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        start = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        return out, int(torch.cuda.max_memory_allocated(dev) - start)
    from torch.profiler import ProfilerActivity, profile

    if torch._C._autograd._profiler_enabled():
        raise CircuitForgeError("cannot measure CPU tensor memory inside another torch.profiler session "
                                "(a memory-budgeted attribution measures its own peak: settings['memory'])")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return out, int(peak)


def fmt_bytes(n: int | float) -> str:
    if n < 2**20:
        return f"{n / 2**10:.1f} kB"
    return f"{n / 2**20:.1f} MB" if n < 2**30 else f"{n / 2**30:.2f} GB"


def plan_rows(measure: Callable[[int], int], n_rows: int, budget: int, out_row_bytes: int = 0) -> dict[str, Any]:
    """Rows per pass under ``budget`` bytes from ``measure(k)`` = measured peak bytes of a pass over ``k``
    rows (k = 1, 2): ``{"rows", "fixed", "per_row", "probe", "outputs"}``. ``out_row_bytes``: per-row results
    kept across passes (per-row scores), reserved twice over for all ``n_rows`` rows (kept, then joined).
    Raises when one row does not fit."""
    outputs = 2 * n_rows * out_row_bytes
    p1 = measure(1)
    if p1 + outputs > budget:
        need = f"{fmt_bytes(p1)} (measured)" + (f" + {fmt_bytes(outputs)} for the per-row scores of all "
                                                 f"{n_rows} rows" if outputs else "")
        raise CircuitForgeError(f"memory budget {fmt_bytes(budget)} is too small: one row of this task needs "
                                f"{need} for edge attribution")
    if n_rows == 1:
        return {"rows": 1, "fixed": p1, "per_row": 0, "probe": [p1], "outputs": outputs}
    p2 = measure(2)
    per_row = max(p2 - p1, 1)
    fixed = max(p1 - per_row, 0)
    rows = int(min(n_rows, max(1, (budget - outputs - fixed) // per_row)))
    if rows >= 2 and p2 + outputs > budget:
        rows = 1
    return {"rows": rows, "fixed": fixed, "per_row": per_row, "probe": [p1, p2], "outputs": outputs}


def kept_row_bytes(handle: Any, level: str, per_row: bool) -> int:
    """Bytes of per-row scores kept across passes per row: float32 node scores, and edge scores at edge level."""
    if not per_row:
        return 0
    from circuitforge.attribution.graph import layout_of

    lay = layout_of(handle)
    return 4 * len(lay.writers) * ((len(lay.readers) if level == "edge" else 0) + 1)


def budgeted(run_rows: Callable[[PromptBatch, int | None], Scores], batch: PromptBatch, budget: int,
             device: torch.device | str = "cpu", out_row_bytes: int = 0) -> Scores:
    """``run_rows(batch, rows_per_pass)`` with the rows per pass planned by :func:`plan_rows` from two probe
    runs on the first one and two rows (every row is padded to the task's longest, so any rows stand for
    all). The run itself is measured too: ``Scores.memory`` holds the plan and the outcome (``budget``,
    ``rows``, ``fixed``, ``per_row``, ``probe``, ``outputs``, ``peak``, ``within_budget``)."""

    def measure(k: int) -> int:
        return peak_bytes(lambda: run_rows(batch.rows(slice(0, k)), None), device)[1]

    plan = plan_rows(measure, len(batch), budget, out_row_bytes)
    sc, peak = peak_bytes(lambda: run_rows(batch, plan["rows"]), device)
    sc.memory = {"budget": budget, **plan, "peak": peak, "within_budget": peak <= budget}
    return sc


class EdgeSink:
    """Folds streamed reader gradients into edge scores (:class:`circuitforge.attribution.hooks.GradSink`):
    ``edges[:n, slot] += scale · Δa[:n] · g`` over (batch, pos, d), ``n`` = writers upstream of the slot.

    ``delta``: Δa ``[writers, batch, pos, d]`` if known before the pass (EAP-IG), else ``clean`` (the clean
    writers; EAP's gradient pass then captures the corrupt ones and Δa = clean − corrupt is formed in the
    captured buffer) or ``ablation`` (EAP under mean/zero ablation: the pass captures the clean writers and
    Δa = clean − ablation). Scores accumulate in float32 whatever the model's dtype."""

    def __init__(self, lay: Layout, edges: Float[torch.Tensor, "writers readers"], scale: float = 1.0, *,
                 delta: torch.Tensor | None = None, clean: torch.Tensor | None = None,
                 ablation: torch.Tensor | None = None) -> None:
        self.lay, self.edges, self.scale = lay, edges, scale
        self.delta, self.clean, self.ablation = delta, clean, ablation

    def writers_ready(self, writers: torch.Tensor | None) -> None:
        if self.delta is not None:
            return
        if writers is None:
            raise CircuitForgeError("EdgeSink needs Δa: pass delta, or capture the writers of the gradient pass")
        if self.clean is not None:   # writers = corrupt run's: Δa = clean − corrupt, in place
            self.delta = writers.neg_().add_(self.clean)
            self.clean = None
        else:
            assert self.ablation is not None
            self.delta = writers.sub_(self.ablation)

    def grad(self, slot: H.Slot, g: torch.Tensor) -> None:
        assert self.delta is not None
        n = self.lay.n_up(slot.start)
        if n == 0:
            return
        part = self.delta[:n].flatten(1) @ g.to(self.delta.dtype).flatten(1).T   # g: [count, batch, pos, d]
        self.edges[:n, slot.start: slot.start + slot.count] += self.scale * part.float()
