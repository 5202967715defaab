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

from collections.abc import Callable

import torch

from circuitforge.data import Task
from circuitforge.models import ModelHandle, clone
from circuitforge.models.hf import adam


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
        total += v1.numel()
        if torch.equal(v0, v1):   # no temporaries for the tensors the edit left alone
            continue
        d = (v1 - v0).float()
        l2 += float((d**2).sum())
        changed += int(torch.count_nonzero(d))
    return {"l2": l2**0.5, "changed": changed, "total": total}


def _matched(base: ModelHandle, edited: ModelHandle, spec: str,
             change: Callable[[str, torch.Tensor, torch.Tensor, int], torch.Tensor | None]) -> ModelHandle:
    """A copy of ``edited``'s structure holding M₀ plus, in every floating tensor the edit reaches, the flat
    change ``change(name, w0, d, k)`` returns (``w0`` = M₀'s flat tensor, ``d`` = the edit's flat change
    M₁ − M₀ there, ``k`` = its number of changed entries; called for ``k > 0`` in sorted-name order; None:
    no change). The benign nulls differ only in ``change``."""
    out = clone(edited, spec=spec)
    sd0, sd1 = base.state_dict(), edited.state_dict()
    params = out.named_parameters()
    with torch.no_grad():
        for k in sorted(sd1):
            v0 = _base_tensor(base, sd0, k)
            if v0 is None or k not in params or v0.shape != sd1[k].shape or not sd1[k].is_floating_point():
                continue
            if torch.equal(sd1[k], v0):   # unchanged by the edit: the copy already holds M₀ there
                continue
            d = (sd1[k] - v0).float().flatten()
            n_changed = int(torch.count_nonzero(d))
            new = v0.detach().clone().float().flatten()
            step = change(k, new, d, n_changed) if n_changed else None
            if step is not None:
                new += step
            params[k].data.copy_(new.view_as(v0).to(params[k].dtype))
    out.invalidate_identity()
    return out


RANDPERM_MAX = 2**25
"""Above this many entries :func:`distinct_positions` stops drawing a full permutation (an untied
262k-token unembedding has 168 M entries: one ``randperm`` of it took 25 s on 2 cores)."""


def distinct_positions(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` distinct positions of ``range(n)``, every k-subset equally likely, drawn from ``g``.

    Up to :data:`RANDPERM_MAX` entries (or when ``k > n / 2``) the first ``k`` of a random permutation;
    above it, uniform draws with replacement until ``k`` distinct values are in hand, then a random ``k`` of
    those (the set of distinct draws is exchangeable over ``range(n)``, so the subset is uniform) — time
    and memory in ``k``, not ``n``."""
    if n <= RANDPERM_MAX or 2 * k > n:
        return torch.randperm(n, generator=g)[:k]
    got = torch.empty(0, dtype=torch.long)
    while got.numel() < k:
        got = torch.unique(torch.cat([got, torch.randint(0, n, (k - got.numel() + 64,), generator=g)]))
    return got[torch.randperm(got.numel(), generator=g)[:k]]


def matched_random_sign(base: ModelHandle, edited: ModelHandle, seed: int = 0) -> ModelHandle:
    """A copy of ``edited``'s structure holding M₀ + a random-sign edit matched to M₁ − M₀ per tensor
    (count of changed entries and L2 norm). Neither input is modified."""
    g = torch.Generator().manual_seed(seed)

    def change(name: str, w0: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor:
        sign = torch.randint(0, 2, (k,), generator=g).float() * 2 - 1
        if k == d.numel():   # a dense edit: every entry moves, no positions to draw
            return sign * (float(d.norm()) / k**0.5)
        step = torch.zeros_like(d)
        step[distinct_positions(d.numel(), k, g)] += sign * float(d.norm()) / k**0.5
        return step

    return _matched(base, edited, f"{base.spec}+benign-random-sign-{seed}", change)


def _touched(base: ModelHandle, edited: ModelHandle) -> set[str]:
    """HF names of the floating tensors in which M₁ differs from M₀."""
    sd0, sd1 = base.state_dict(), edited.state_dict()
    out = set()
    for k, v1 in sd1.items():
        v0 = _base_tensor(base, sd0, k)
        if v0 is not None and v0.shape == v1.shape and v1.is_floating_point() and not torch.equal(v0, v1):
            out.add(k)
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
    the tensor's L2 norm equals the edit's ``‖Δ_t‖``. Only the tensors the edit changed are trained (the
    others would be discarded; freezing them skips their gradients and optimiser state — for an edit of
    the last blocks, the backward pass below them). Same size and spread as the edit, a direction that
    training on other data takes — a stricter null than random signs, whose directions no training
    produces. Neither input is modified."""
    from circuitforge.surgery.objectives import answer_batch, answer_nll_at

    ft = clone(base, spec=f"{base.spec}+benign-finetune-{seed}")
    params = ft.named_parameters()
    touched = _touched(base, edited)
    if "lm_head.weight" in touched:
        touched.add("model.embed_tokens.weight")
    trained = [p for name, p in params.items() if name in touched]
    g = torch.Generator().manual_seed(seed)
    for name, p in params.items():
        p.requires_grad_(name in touched)
    if not trained:
        return _matched(base, edited, f"{base.spec}+benign-finetune-{seed}", lambda *a: None)
    opt = adam(trained, lr)
    ft.bridge.eval()
    try:
        for _ in range(steps):
            rows = torch.randperm(len(unrelated), generator=g)[:batch_size].tolist()
            b = answer_batch(ft, unrelated, rows)
            opt.zero_grad(set_to_none=True)
            answer_nll_at(ft, b).backward()
            opt.step()
    finally:
        for p in params.values():
            p.grad = None
    sdf = ft.state_dict()

    def change(name: str, w0: torch.Tensor, d: torch.Tensor, k: int) -> torch.Tensor | None:
        vf = sdf.get(name, sdf.get("model.embed_tokens.weight") if name == "lm_head.weight" else None)
        if vf is None or vf.numel() != d.numel():
            return None
        dft = vf.float().flatten() - w0
        if k >= dft.numel():   # a dense edit keeps the whole fine-tune change
            step = dft
        else:
            step = torch.zeros_like(dft)
            keep = torch.topk(dft.abs(), k, sorted=False).indices
            step[keep] = dft[keep]
        norm = float(step.norm())
        return step * (float(d.norm()) / norm) if norm > 0 else None

    return _matched(base, edited, f"{base.spec}+benign-finetune-{seed}", change)
