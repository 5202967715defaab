"""SURE — Saliency-based Unlearning with a large learning Rate (Zhang et al. 2025, "Catastrophic Failure
of LLM Unlearning via Quantization", ICLR 2025, §6).

1. Saliency: for every weight matrix θ_i in scope, ``s_i = ‖∇_{θ_i} L_forget(θ₀)‖₂`` at the input model
   (summed over all forget rows); the module mask keeps the matrices with ``s_i`` in the top
   ``saliency_share`` of modules (the paper's threshold γ, expressed as a share so it transfers across
   models). ``saliency_unit="element"`` instead keeps the top share of individual weights by ``|∇|``.
2. Unlearn with the base objective (``npo``: NPO + retain KL, or ``graddiff``) and a learning rate ~10×
   the plain baselines', updating *only* the masked weights.

The published implementation built the mask but never applied it to the update; here the gradient is
multiplied by the mask and every weight outside it is restored bit-for-bit after each step
(:func:`~circuitforge.surgery._common.gradient_loop`), and the tests check the exact diff.
"""

from dataclasses import dataclass
from typing import Any, Literal

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
    trainable,
)
from circuitforge.surgery.graddiff import graddiff_loss
from circuitforge.surgery.npo import npo_kl_loss
from circuitforge.surgery.objectives import answer_batch, answer_nll, row_chunks
from circuitforge.surgery.result import UnlearnResult


@dataclass(frozen=True)
class SURESettings(LoopSettings):
    """SURE settings (see module docstring)."""

    lr: float = 1e-4
    objective: Literal["npo", "graddiff"] = "npo"
    saliency_unit: Literal["module", "element"] = "module"
    saliency_share: float = 0.5
    beta: float = 0.1
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.saliency_share <= 1.0, "saliency_share must be in (0, 1]")
        check(self.beta > 0, "beta must be > 0")
        check(self.retain_weight >= 0, "retain_weight must be ≥ 0")


Settings = SURESettings


def forget_gradients(
    handle: ModelHandle, params: dict[str, torch.nn.Parameter], forget: Task, chunk: int = 16
) -> dict[str, torch.Tensor]:
    """``∇_θ NLL_forget`` (answer NLL summed over all rows, chunked) for ``params``; the model's grads are
    cleared afterwards."""
    with trainable(handle, params):
        for rows in row_chunks(len(forget), chunk):
            b = answer_batch(handle, forget, rows)
            (answer_nll(forward(handle, b.tokens), b) * len(rows)).backward()
        return {n: p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for n, p in params.items()}


def saliency_mask(grads: dict[str, torch.Tensor], unit: str, share: float) -> dict[str, torch.Tensor]:
    """Boolean masks (name → tensor of the parameter's shape) keeping the top ``share`` by gradient norm
    (``unit="module"``: whole matrices by ‖∇‖₂; ``"element"``: single weights by |∇|)."""
    if unit == "module":
        norms = torch.tensor([float(g.norm()) for g in grads.values()])
        k = max(1, round(share * len(norms)))
        keep = set(torch.topk(norms, k).indices.tolist())
        return {n: torch.full(g.shape, i in keep, dtype=torch.bool) for i, (n, g) in enumerate(grads.items())}
    flat = torch.cat([g.abs().reshape(-1) for g in grads.values()])
    k = max(1, round(share * flat.numel()))
    thresh = torch.topk(flat, k).values.min()
    return {n: g.abs() >= thresh for n, g in grads.items()}


def run(handle: ModelHandle, forget: Task, retain: Task, *, seed: int = 0, **settings: Any) -> UnlearnResult:
    """SURE on ``forget`` / ``retain``. See the module docstring."""
    s = make_settings(SURESettings, **settings)
    r = Run.start(handle)
    params = scoped_params(r.edited, s.scope)
    mask = saliency_mask(forget_gradients(r.edited, params, forget), s.saliency_unit, s.saliency_share)
    if s.objective == "npo":
        loss_fn = npo_kl_loss(handle, r.edited, forget, retain, s.batch_size, s.beta, s.retain_weight, seed)
    else:
        loss_fn = graddiff_loss(r.edited, forget, retain, s.batch_size, s.retain_weight, seed)
    hist, why = gradient_loop(r.edited, params, loss_fn, s, forget, masks=mask)
    kept = sorted(n for n, m in mask.items() if bool(m.any()))
    diag = {"salient_modules": kept, "n_salient_modules": len(kept), "n_modules": len(mask)}
    return r.finish("sure", s, seed, forget, retain, hist, why, mask=mask, diagnostics=diag)
