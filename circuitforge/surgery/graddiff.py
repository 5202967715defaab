"""GradDiff — gradient difference: ascend the forget NLL, descend the retain NLL.

Minimises ``L = −NLL_forget + α · NLL_retain`` (answers of forget and retain rows, mean per token), the
"GA + GD on retain" baseline used by TOFU (Maini et al. 2024) and NPO (Zhang et al. 2024), with Adam over
the attention and MLP matrices, early-stopped at ``target_forget_acc``.
"""

from dataclasses import dataclass
from typing import Any

import torch

from circuitforge.data import Task
from circuitforge.models.handle import ModelHandle
from circuitforge.surgery._common import (
    LoopSettings,
    LossFn,
    Run,
    check,
    forward,
    gradient_loop,
    make_settings,
    scoped_params,
)
from circuitforge.surgery.objectives import answer_batch, answer_nll, shuffled_batches
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class GradDiffSettings(LoopSettings):
    """GradDiff settings. ``retain_weight`` is α (weight of the retain NLL)."""

    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.retain_weight >= 0, "retain_weight must be ≥ 0")


Settings = GradDiffSettings


def graddiff_loss(
    edited: ModelHandle, forget: Task, retain: Task, batch_size: int, retain_weight: float, seed: int
) -> LossFn:
    """``step -> (−NLL_forget + α·NLL_retain, logs)`` on seeded shuffled batches of ``batch_size`` rows."""
    g = torch.Generator().manual_seed(seed)
    fb, rb = shuffled_batches(len(forget), batch_size, g), shuffled_batches(len(retain), batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        bf, br = answer_batch(edited, forget, next(fb)), answer_batch(edited, retain, next(rb))
        nf, nr = answer_nll(forward(edited, bf.tokens), bf), answer_nll(forward(edited, br.tokens), br)
        return -nf + retain_weight * nr, {"forget_nll": float(nf.detach()), "retain_nll": float(nr.detach())}

    return loss_fn


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """GradDiff on ``forget`` with a retain-NLL term on ``retain``. See the module docstring."""
    s = make_settings(GradDiffSettings, **settings)
    r = Run.start(handle)
    loss_fn = graddiff_loss(r.edited, forget, retain, s.batch_size, s.retain_weight, seed)
    hist, why = gradient_loop(r.edited, scoped_params(r.edited, s.scope), loss_fn, s, forget)
    return r.finish("graddiff", s, seed, forget, retain, hist, why)
