"""GA — gradient ascent on the forget answers (the simplest unlearning baseline).

Minimises ``L = −NLL_forget`` (:func:`~circuitforge.surgery.objectives.answer_nll` on forget rows), i.e.
raises the forget answers' NLL, with Adam over the attention and MLP matrices, early-stopped as soon as
forget accuracy reaches ``target_forget_acc`` (see :class:`~circuitforge.surgery._common.LoopSettings`).
Without the early stop GA diverges and collapses the model (Zhang et al. 2024, NPO, §3).
"""

from dataclasses import dataclass
from typing import Any

import torch

from circuitforge.data import Task
from circuitforge.models.handle import ModelHandle
from circuitforge.surgery._common import (
    LoopSettings,
    Run,
    forward,
    gradient_loop,
    make_settings,
    scoped_params,
)
from circuitforge.surgery.objectives import answer_batch, answer_nll, shuffled_batches
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class GASettings(LoopSettings):
    """GA settings: only the shared loop settings (defaults: Adam lr 1e-5, ≤ 60 steps, batch 8)."""


Settings = GASettings


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """Gradient ascent on ``forget`` (``retain`` is only evaluated). See the module docstring."""
    s = make_settings(GASettings, **settings)
    r = Run.start(handle)
    g = torch.Generator().manual_seed(seed)
    batches = shuffled_batches(len(forget), s.batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = answer_batch(r.edited, forget, next(batches))
        nll = answer_nll(forward(r.edited, b.tokens), b)
        return -nll, {"forget_nll": float(nll.detach())}

    hist, why = gradient_loop(r.edited, scoped_params(r.edited, s.scope), loss_fn, s, forget)
    return r.finish("ga", s, seed, forget, retain, hist, why)
