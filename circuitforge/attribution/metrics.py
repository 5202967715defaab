"""Metrics on the last prompt position. Higher always means "more like the clean answer".

A metric is a callable ``metric(logits, batch) -> value`` where ``logits`` is ``[batch, vocab]`` (the
logits at each row's last prompt token) and ``batch`` is the :class:`PromptBatch`; it returns ``[batch]``
per-row values (averaged over rows) or a scalar. Built-ins (answers are scored by their first token):

* ``"logit_diff"`` (default): logit(answer) − logit(corrupt answer); rows without a corrupt answer use
  the mean logit of their distractors instead (Wang et al. 2022).
* ``"logprob"``: log p(answer).
* ``"kl"``: −KL(p_clean ‖ p), so 0 on the clean run and lower the further from it.
"""

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float

from circuitforge.attribution.corruption import PromptBatch
from circuitforge.errors import CircuitForgeError

MetricFn = Callable[..., Any]


def logit_diff(logits: Float[torch.Tensor, "batch vocab"], batch: PromptBatch) -> Float[torch.Tensor, " batch"]:
    """logit(answer) − logit(corrupt answer), or − mean logit(distractors) where there is no corrupt answer."""
    idx = torch.arange(logits.shape[0], device=logits.device)
    a = logits[idx, batch.answer]
    has_c = batch.corrupt_answer >= 0
    c = logits[idx, batch.corrupt_answer.clamp(min=0)]
    if batch.distractors.shape[1]:
        dmask = (batch.distractors >= 0).to(logits.dtype)
        d = logits.gather(1, batch.distractors.clamp(min=0)) * dmask
        dmean = d.sum(1) / dmask.sum(1).clamp(min=1)
    else:
        dmean = torch.zeros_like(a)
    if not bool(has_c.all()) and not batch.distractors.shape[1]:
        raise CircuitForgeError("logit_diff needs a corrupt_answer or distractors on every row")
    return a - torch.where(has_c, c, dmean)


def answer_logprob(logits: Float[torch.Tensor, "batch vocab"], batch: PromptBatch) -> Float[torch.Tensor, " batch"]:
    """log p(first answer token)."""
    lp = torch.log_softmax(logits, dim=-1)
    return lp[torch.arange(logits.shape[0], device=logits.device), batch.answer]


class NegKL:
    """−KL(p_clean ‖ p) at the last prompt position; needs the clean logits (set by the runner)."""

    name = "kl"

    def __init__(self) -> None:
        self.clean_logp: torch.Tensor | None = None

    def __call__(self, logits: Float[torch.Tensor, "batch vocab"], batch: PromptBatch) -> Float[torch.Tensor, " batch"]:
        if self.clean_logp is None:
            raise CircuitForgeError("kl metric used before the clean run")
        ref = self.clean_logp
        if ref.shape[0] != logits.shape[0]:  # several patched copies of the batch stacked together
            ref = ref.repeat(logits.shape[0] // ref.shape[0], 1)
        lp = torch.log_softmax(logits, dim=-1)
        return -(ref.exp() * (ref - lp)).sum(-1)


def resolve(metric: str | MetricFn | None) -> tuple[str, MetricFn]:
    """``(name, callable)`` for a metric name or callable (None → logit difference)."""
    if metric is None or metric == "logit_diff":
        return "logit_diff", logit_diff
    if metric == "logprob":
        return "logprob", answer_logprob
    if metric == "kl":
        return "kl", NegKL()
    if isinstance(metric, str):
        raise CircuitForgeError(f"unknown metric {metric!r} (logit_diff, logprob, kl, or a callable)")
    if not callable(metric):
        raise CircuitForgeError("metric must be a name or a callable(logits[batch, vocab], batch)")
    return getattr(metric, "__name__", "custom"), metric


def reduce(value: Any) -> torch.Tensor:
    """Mean over rows of a metric's output (a scalar passes through)."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=torch.float32)
    return value.mean() if value.dim() else value


def prime(metric: MetricFn, clean_last_logits: Float[torch.Tensor, "batch vocab"]) -> None:
    """Give a metric that needs the clean run (``kl``) its reference."""
    if isinstance(metric, NegKL):
        metric.clean_logp = torch.log_softmax(clean_last_logits.detach(), dim=-1)
