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


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """NPO on ``forget`` with a KL-to-reference term on ``retain``. See the module docstring."""
    s = make_settings(NPOSettings, **settings)
    r = Run.start(handle)
    ref_lp = reference_logprob(handle, forget)
    g = torch.Generator().manual_seed(seed)
    fb, rb = shuffled_batches(len(forget), s.batch_size, g), shuffled_batches(len(retain), s.batch_size, g)

    def loss_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rows = next(fb)
        bf, br = answer_batch(r.edited, forget, rows), answer_batch(r.edited, retain, next(rb))
        lp = sequence_logprob(forward(r.edited, bf.tokens), bf)
        npo = npo_loss(lp, ref_lp[rows], s.beta)
        with torch.no_grad():
            ref_logits = forward(handle, br.tokens)
        kl = kl_to_reference(forward(r.edited, br.tokens), ref_logits, br.valid)
        return npo + s.retain_weight * kl, {"npo": float(npo.detach()), "retain_kl": float(kl.detach())}

    hist, why = gradient_loop(r.edited, scoped_params(r.edited, s.scope), loss_fn, s, forget)
    return r.finish("npo", s, seed, forget, retain, hist, why)
