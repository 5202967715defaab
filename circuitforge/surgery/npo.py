"""NPO — Negative Preference Optimization with a retain KL term (Zhang, Lin, Bai, Mei 2024).

Minimises ``L = NPO_β(forget) + α · KL(π_ref ‖ π_θ)(retain)``, where
``NPO_β = −(2/β) · mean log σ(−β · (log π_θ(y|x) − log π_ref(y|x)))`` over forget rows (``y`` the answer)
and the KL is averaged over every non-pad retain position (:mod:`~circuitforge.surgery.objectives`).
``π_ref`` is the input model, frozen (never modified). Adam over the attention and MLP matrices,
early-stopped at ``target_forget_acc``.
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
from circuitforge.surgery.objectives import (
    answer_batch,
    kl_to_reference,
    npo_loss,
    reference_logprob,
    sequence_logprob,
    shuffled_batches,
)
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class NPOSettings(LoopSettings):
    """NPO settings: ``beta`` (β, the inverse temperature of the preference loss; 0.1 as in the paper)
    and ``retain_weight`` (α, weight of the retain KL)."""

    beta: float = 0.1
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, "beta must be > 0")
        check(self.retain_weight >= 0, "retain_weight must be ≥ 0")


Settings = NPOSettings


def npo_kl_loss(
    reference: ModelHandle, edited: ModelHandle, forget: Task, retain: Task, batch_size: int, beta: float,
    retain_weight: float, seed: int,
) -> LossFn:
    """``step -> (NPO_β(forget) + α·KL(ref ‖ θ)(retain), logs)`` on seeded shuffled batches; ``reference``
    is only run under ``no_grad``."""
    ref_lp = reference_logprob(reference, forget)
    g = torch.Generator().manual_seed(seed)
    fb, rb = shuffled_batches(len(forget), batch_size, g), shuffled_batches(len(retain), batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rows = next(fb)
        bf, br = answer_batch(edited, forget, rows), answer_batch(edited, retain, next(rb))
        lp = sequence_logprob(forward(edited, bf.tokens), bf)
        npo = npo_loss(lp, ref_lp[rows], beta)
        with torch.no_grad():
            ref_logits = forward(reference, br.tokens)
        kl = kl_to_reference(forward(edited, br.tokens), ref_logits, br.valid)
        return npo + retain_weight * kl, {"npo": float(npo.detach()), "retain_kl": float(kl.detach())}

    return loss_fn


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """NPO on ``forget`` with a KL-to-reference term on ``retain``. See the module docstring."""
    s = make_settings(NPOSettings, **settings)
    r = Run.start(handle)
    loss_fn = npo_kl_loss(handle, r.edited, forget, retain, s.batch_size, s.beta, s.retain_weight, seed)
    hist, why = gradient_loop(r.edited, scoped_params(r.edited, s.scope), loss_fn, s, forget)
    return r.finish("npo", s, seed, forget, retain, hist, why)
