"""Faithfulness by real ablation (Wang et al. 2022; Conmy et al. 2023; Hanna et al. 2024).

One forward pass on the clean prompts in which **every edge outside the circuit is patched to its
corrupted value**: each reader's input becomes ``clean-run input − Σ_{non-circuit writers w}
(a_w − a_w^corr)`` (``a_w`` from the same pass). Then

    faithfulness = (M_circuit − M_corrupt) / (M_clean − M_corrupt)

1 = the circuit alone recovers the clean behaviour; 0 = no better than the corrupted model. The circuit
is given by edge ids, so it can be evaluated on any model with the same architecture (e.g. a base
circuit inside an edited model).
"""

from typing import Any

import torch
from jaxtyping import Bool

from circuitforge.attribution import common as C
from circuitforge.attribution import hooks as H
from circuitforge.attribution.corruption import encode_task
from circuitforge.attribution.graph import layout_of
from circuitforge.attribution.metrics import MetricFn, resolve
from circuitforge.circuits.circuit import Circuit
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle


class Evaluator:
    """Clean/corrupt values of a task computed once; :meth:`metric` / :meth:`faithfulness` of any keep
    mask then cost one forward pass per chunk."""

    def __init__(self, handle: ModelHandle, task: Task, corruption: str = "counterfactual",
                 metric: str | MetricFn | None = None, batch_size: int | None = 32) -> None:
        self.handle = handle
        self.lay = layout_of(handle)
        self.metric_name, fn = resolve(metric)
        batch = encode_task(handle, task, corruption)
        self.states: list[tuple[C.Chunk, C.ChunkState]] = []
        with H.prepared(handle):
            ablation = C.ablation_values(handle, batch, batch_size)
            for ch in C.chunks(batch, fn, batch_size):
                self.states.append((ch, C.clean_and_corrupt(handle, ch, fn, ablation)))
        self.clean = sum(ch.weight * st.clean_metric for ch, st in self.states)
        self.corrupt = sum(ch.weight * st.corrupt_metric for ch, st in self.states)

    def metric(self, keep: Bool[torch.Tensor, "writers readers"]) -> float:
        """Task-mean metric with every edge outside ``keep`` patched."""
        total = 0.0
        with H.prepared(self.handle):
            for ch, st in self.states:
                total += ch.weight * C.ablated_metric(self.handle, ch, st.corr_writers, keep)
        return total

    def faithfulness(self, keep: Bool[torch.Tensor, "writers readers"]) -> float:
        gap = self.clean - self.corrupt
        if abs(gap) < 1e-8:
            raise CircuitForgeError(f"clean and corrupt metric are equal ({self.clean:.4g}); faithfulness is undefined")
        return (self.metric(keep) - self.corrupt) / gap


def faithfulness(
    handle: ModelHandle,
    task: Task,
    circuit: Circuit,
    corruption: str | None = None,
    metric: str | MetricFn | None = None,
    batch_size: int | None = 32,
) -> float:
    """Faithfulness of ``circuit`` on ``task`` in ``handle`` (module docstring). ``corruption`` and
    ``metric`` default to the ones the circuit was found with. ``handle`` may carry different weights
    than the model the circuit came from (same architecture)."""
    return faithfulness_report(handle, task, circuit, corruption, metric, batch_size)["faithfulness"]


def faithfulness_report(
    handle: ModelHandle,
    task: Task,
    circuit: Circuit,
    corruption: str | None = None,
    metric: str | MetricFn | None = None,
    batch_size: int | None = 32,
) -> dict[str, Any]:
    """``{"faithfulness", "clean", "corrupt", "circuit"}`` metric values (see :func:`faithfulness`)."""
    if circuit.model and circuit.model.get("n_layers") is not None:
        arch = (handle.n_layers, handle.n_heads, handle.n_kv_heads)
        m = circuit.model
        if arch != (int(m["n_layers"]), int(m["n_heads"]), int(m["n_kv_heads"])):
            raise CircuitForgeError(f"circuit was found on a model with (layers, heads, kv heads) = "
                                    f"{(m['n_layers'], m['n_heads'], m['n_kv_heads'])}, this one has {arch}")
    ev = Evaluator(handle, task, corruption or circuit.corruption, metric if metric is not None else circuit.metric, batch_size)
    keep = circuit.keep_mask(ev.lay)
    m_c = ev.metric(keep)
    gap = ev.clean - ev.corrupt
    if abs(gap) < 1e-8:
        raise CircuitForgeError(f"clean and corrupt metric are equal ({ev.clean:.4g}); faithfulness is undefined")
    return {"faithfulness": (m_c - ev.corrupt) / gap, "clean": ev.clean, "corrupt": ev.corrupt, "circuit": m_c}
