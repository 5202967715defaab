"""A null made of benign edits matched to the edit under test.

:func:`matched_random_sign` perturbs M₀ with a random-sign edit of the same shape of change as M₁ − M₀:
in every weight tensor it changes as many entries as the edit changed (chosen uniformly at random), each
by ``±‖Δ_t‖ / √k_t``, so the per-tensor (and so the total) L2 norm ‖Δθ‖ and the number of changed weights
match exactly. Such an edit carries no information about the forget facts; whatever recovery evidence it
produces is what an edit of that size produces by accident. :func:`matched_finetune` does the same with
the direction a fine-tune on unrelated rows takes (its largest changes, per tensor, rescaled). The
observed erasure score is placed in the distribution of benign ones (:func:`percentile`).

Tensors are matched by HF name. An edit that unties the unembedding (``lm_head.weight`` appears only in
M₁) is compared with M₀'s tied embedding.
"""

import torch

from circuitforge.data import Task
from circuitforge.models import ModelHandle, clone


def _base_tensor(base: ModelHandle, sd0: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    if name in sd0:
        return sd0[name]
    if name == "lm_head.weight":
        return base.hf.get_output_embeddings().weight.detach()
    return None


def edit_stats(base: ModelHandle, edited: ModelHandle) -> dict[str, float | int]:
    """``{"l2": ‖Δθ‖, "changed": weights changed, "total": weights compared}`` of M₁ − M₀."""
    sd0, sd1 = base.state_dict(), edited.state_dict()
    l2, changed, total = 0.0, 0, 0
    for k, v1 in sd1.items():
        v0 = _base_tensor(base, sd0, k)
        if v0 is None or v0.shape != v1.shape or not v1.is_floating_point():
            continue
        d = (v1 - v0).float()
        l2 += float((d**2).sum())
        changed += int((d != 0).sum())
        total += d.numel()
    return {"l2": l2**0.5, "changed": changed, "total": total}


def matched_random_sign(base: ModelHandle, edited: ModelHandle, seed: int = 0) -> ModelHandle:
    """A copy of ``edited``'s structure holding M₀ + a random-sign edit matched to M₁ − M₀ per tensor
    (count of changed entries and L2 norm). Neither input is modified."""
    out = clone(edited, spec=f"{base.spec}+benign-random-sign-{seed}")
    sd0, sd1 = base.state_dict(), edited.state_dict()
    g = torch.Generator().manual_seed(seed)
    params = out.named_parameters()
    with torch.no_grad():
        for k in sorted(sd1):
            v0 = _base_tensor(base, sd0, k)
            if v0 is None or k not in params or v0.shape != sd1[k].shape or not sd1[k].is_floating_point():
                continue
            d = (sd1[k] - v0).float()
            n_changed = int((d != 0).sum())
            new = v0.detach().clone().float().flatten()
            if n_changed:
                pos = torch.randperm(new.numel(), generator=g)[:n_changed]
                sign = torch.randint(0, 2, (n_changed,), generator=g).float() * 2 - 1
                new[pos] += sign * float(d.norm()) / n_changed**0.5
            params[k].data.copy_(new.view_as(v0).to(params[k].dtype))
    out.invalidate_identity()
    return out


def percentile(observed: float, null: list[float]) -> float:
    """Share of the null strictly below ``observed`` plus half the ties, in [0, 1]."""
    if not null:
        return float("nan")
    below = sum(x < observed for x in null)
    ties = sum(x == observed for x in null)
    return (below + 0.5 * ties) / len(null)


def matched_finetune(base: ModelHandle, edited: ModelHandle, unrelated: Task, steps: int = 10, lr: float = 1e-4,
                     batch_size: int = 8, seed: int = 0) -> ModelHandle:
    """M₀ + a fine-tune on ``unrelated`` rows, matched to M₁ − M₀ per tensor.

    A copy of M₀ is fine-tuned (Adam, answer NLL, ``steps`` steps of ``batch_size`` rows drawn with
    ``seed``) on text unrelated to the forget facts; of its change ``Δ_ft`` every weight tensor keeps the
    ``k_t`` entries of largest ``|Δ_ft|`` (``k_t`` = entries the edit changed in that tensor), rescaled so
    the tensor's L2 norm equals the edit's ``‖Δ_t‖``. Same size and spread as the edit, a direction that
    training on other data takes — a stricter null than random signs, whose directions no training
    produces. Neither input is modified."""
    from circuitforge.surgery.objectives import answer_batch, answer_nll

    ft = clone(base, spec=f"{base.spec}+benign-finetune-{seed}")
    params = ft.named_parameters()
    g = torch.Generator().manual_seed(seed)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    ft.bridge.eval()
    try:
        for _ in range(steps):
            rows = torch.randperm(len(unrelated), generator=g)[:batch_size].tolist()
            b = answer_batch(ft, unrelated, rows)
            opt.zero_grad(set_to_none=True)
            answer_nll(ft.logits(b.tokens.to(ft.device)), b).backward()
            opt.step()
    finally:
        for p in params.values():
            p.grad = None
    out = clone(edited, spec=f"{base.spec}+benign-finetune-{seed}")
    sd0, sd1, sdf = base.state_dict(), edited.state_dict(), ft.state_dict()
    oparams = out.named_parameters()
    with torch.no_grad():
        for k in sorted(sd1):
            v0 = _base_tensor(base, sd0, k)
            if v0 is None or k not in oparams or v0.shape != sd1[k].shape or not sd1[k].is_floating_point():
                continue
            d = (sd1[k] - v0).float()
            n_changed = int((d != 0).sum())
            new = v0.detach().clone().float().flatten()
            vf = sdf.get(k, sdf.get("model.embed_tokens.weight") if k == "lm_head.weight" else None)
            if n_changed and vf is not None and vf.shape == v0.shape:
                dft = (vf.float() - v0.float()).flatten()
                keep = torch.topk(dft.abs(), min(n_changed, dft.numel())).indices
                step = torch.zeros_like(dft)
                step[keep] = dft[keep]
                norm = float(step.norm())
                if norm > 0:
                    new += step * (float(d.norm()) / norm)
            oparams[k].data.copy_(new.view_as(v0).to(oparams[k].dtype))
    out.invalidate_identity()
    return out
