"""Relearning attack (Deeb & Roger, 2024): does a little fine-tuning on *some* forget facts bring back the
*others*?

Fine-tune a copy of the model on one half of the forget rows (answer NLL, Adam, a fixed small budget),
then measure accuracy on the other half. The recovery rate is that accuracy divided by the same attack's
result on the base model (so 1.0 means the unlearned model relearns as well as the base model does).
"""

import time
from dataclasses import asdict, dataclass

import torch

from circuitforge.data import Task, evaluate
from circuitforge.data.scoring import encode, pad_batch
from circuitforge.models import ModelHandle, clone


@dataclass(frozen=True)
class RelearnSettings:
    steps: int = 20
    lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0 or self.batch_size < 1:
            raise ValueError("steps, lr and batch_size must be positive")


def answer_nll(handle: ModelHandle, task: Task, rows: list[int]) -> torch.Tensor:
    """Mean NLL of the answer tokens of ``task.items[rows]`` (a differentiable scalar)."""
    enc = [encode(handle, task.items[i].prompt, task.items[i].answer) for i in rows]  # type: ignore[union-attr,arg-type]
    toks = pad_batch([e[0] for e in enc]).to(handle.device)
    logp = torch.log_softmax(handle.logits(toks), dim=-1)
    total, count = logp.new_zeros(()), 0
    for r, (ids, n_ctx) in enumerate(enc):
        tgt = torch.tensor(ids[n_ctx:], device=logp.device)
        total = total - logp[r, n_ctx - 1 : len(ids) - 1].gather(1, tgt[:, None]).sum()
        count += len(tgt)
    return total / max(count, 1)


def finetune(handle: ModelHandle, task: Task, settings: RelearnSettings) -> ModelHandle:
    """A fine-tuned copy of ``handle`` (the input is untouched)."""
    out = clone(handle, spec=f"{handle.spec}+relearn")
    params = [p for p in out.named_parameters().values()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=settings.lr)
    g = torch.Generator().manual_seed(settings.seed)
    out.bridge.train()
    try:
        for _ in range(settings.steps):
            rows = torch.randperm(len(task), generator=g)[: settings.batch_size].tolist()
            loss = answer_nll(out, task, rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        out.bridge.eval()
        out.bridge.zero_grad(set_to_none=True)
    out.invalidate_identity()
    return out


@dataclass(frozen=True)
class RelearnResult:
    attacked_accuracy: float
    """held-out-half forget accuracy of the unlearned model after the attack"""
    base_attacked_accuracy: float
    """the same for the base model"""
    before_accuracy: float
    """held-out-half forget accuracy of the unlearned model before the attack"""
    recovery_rate: float | None
    """attacked ÷ base attacked (None when the base attack reaches 0)"""
    settings: RelearnSettings
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {**{k: v for k, v in asdict(self).items() if k != "settings"}, "settings": asdict(self.settings)}


def relearning_attack(base: ModelHandle, unlearned: ModelHandle, forget: Task,
                      settings: RelearnSettings | None = None) -> RelearnResult:
    """Fine-tune both models on the even rows of ``forget`` and score the odd rows (see module doc)."""
    s = settings or RelearnSettings()
    t0 = time.time()
    train, held = forget.halves()
    before = evaluate(unlearned, held).accuracy
    attacked = evaluate(finetune(unlearned, train, s), held).accuracy
    base_attacked = evaluate(finetune(base, train, s), held).accuracy
    rate = attacked / base_attacked if base_attacked > 0 else None
    return RelearnResult(attacked, base_attacked, before, rate, s, time.time() - t0)
