"""The steps of MANSU (Mechanistic-Aligned Null-Space Unlearning, arXiv 2605.15138), one function each.

Notation: an edited weight matrix ``W`` is ``[out, in]`` (``nn.Linear``); the circuit owns a block
``W[rows, cols]`` of it (an :class:`EditUnit`). ``F(θ)`` is the forget objective (minimised, see
:mod:`~circuitforge.surgery.objectives`), ``g = ∇F`` its gradient. Signs: a *direction* is a descent
direction (``−g`` and its projections); a *move* ``δ`` is the actual change of a weight.

1. :func:`circuit_mask` — the circuit's components (``a3.h1``, ``a3.kv0``, ``m2``...) → their 2-D weight
   slices (:func:`~circuitforge.models.component_params`) → one boolean mask per matrix, minus every
   NF4 block's absmax weight (:func:`exclude_absmax`), which MANSU never edits.
2. :func:`forget_gradient` — ``g`` restricted to the mask (zero outside).
3. :func:`retain_second_moments`, :func:`nullspace_projector`, :func:`project` — for each unit, the retain
   inputs ``x`` the unit's columns see (every non-pad retain token), ``C = mean x xᵀ``; ``P = U Uᵀ`` over
   the eigenvectors with ``λ ≤ τ · λ_max``; ``Δ ↦ Δ P``. Then ``(W + ΔP) x = W x + Δ P x`` and
   ``‖Δ P x‖² ≤ τ λ_max ‖Δ‖²`` on average over the retain tokens, i.e. retain outputs of that matrix are
   unchanged to first order.
4. :func:`diagonal_fisher`, :func:`select_under_budget` — empirical diagonal Fisher of the retain loss
   ``L_R`` (mean answer NLL per token): ``F_ii = (1/T) Σ_batches (∂ Σ_rows-in-batch ℓ_n / ∂θ_i)²`` (exact
   per-row Fisher with ``batch_size=1``). A move ``δ`` costs ``½ Σ F_ii δ_i²`` nats of ``L_R`` (second
   order, gradient ≈ 0 at the base). Candidates are ranked by forget gain ÷ that cost and taken greedily
   while the cumulative cost fits the budget.
5. :func:`apply_floor`, :func:`verify_code_flips` — every move is at least ``κ ×`` the weight's NF4 bin
   width (κ > 1), and it is refused if it would reach the block's absmax; since the absmax weight itself
   is never edited, each block's absmax — and with it every boundary — stays fixed, so the code of every
   edited weight changes by construction and no untouched weight's code changes. The flips are then
   verified with the quantization module's bit-exact code computation.
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float

from circuitforge.data import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.weights import component_params
from circuitforge.surgery._common import forward, trainable
from circuitforge.surgery.objectives import (
    answer_batch,
    answer_nll,
    margin_loss,
    npo_loss,
    row_chunks,
    sequence_logprob,
)

Mask = dict[str, torch.Tensor]  # HF name → Bool[out, in]


@dataclass(frozen=True)
class EditUnit:
    """The block ``W[rows, cols]`` of matrix ``name`` owned by one circuit component."""

    name: str
    rows: slice
    cols: slice

    @property
    def module(self) -> str:
        return self.name.removesuffix(".weight")

    @property
    def key(self) -> tuple[str, int, int]:
        """Which inputs the unit reads: (module, first column, end column)."""
        return (self.module, int(self.cols.start), int(self.cols.stop))


def _as_slice(i: slice | int, size: int) -> slice:
    if isinstance(i, int):
        return slice(i, i + 1)
    start, stop, step = i.indices(size)
    if step != 1:
        raise CircuitForgeError("strided parameter slices are not supported")
    return slice(start, stop)


# -- step 1: circuit → mask ---------------------------------------------------------------------------


def circuit_mask(handle: ModelHandle, nodes: list[str] | tuple[str, ...]) -> tuple[Mask, list[EditUnit]]:
    """Boolean masks of the circuit's 2-D weight slices and their :class:`EditUnit` s (biases and 1-D
    parameters are not edited). Llama-family models only (``nn.Linear`` ``[out, in]`` weights)."""
    if handle.family != "llama":
        raise CircuitForgeError("MANSU edits nn.Linear [out, in] weights: it supports Llama-family models only")
    units: list[EditUnit] = []
    for node in nodes:
        for ps in component_params(handle, node):
            if ps.param.dim() != 2:
                continue
            rows, cols = ps.index
            units.append(EditUnit(ps.name, _as_slice(rows, ps.param.shape[0]), _as_slice(cols, ps.param.shape[1])))
    params = handle.named_parameters()
    full = {u.name for u in units if (u.rows.stop - u.rows.start, u.cols.stop - u.cols.start) == tuple(params[u.name].shape)}
    kept: list[EditUnit] = []
    for u in units:  # a whole-matrix unit swallows the narrower ones; drop duplicates
        if (u.name in full and (u.rows.stop - u.rows.start, u.cols.stop - u.cols.start) != tuple(params[u.name].shape)) or u in kept:
            continue
        kept.append(u)
    mask: Mask = {}
    for u in kept:
        m = mask.setdefault(u.name, torch.zeros(params[u.name].shape, dtype=torch.bool))
        if m[u.rows, u.cols].any():
            raise CircuitForgeError(f"overlapping circuit slices in {u.name}")
        m[u.rows, u.cols] = True
    return mask, kept


def block_absmax_mask(w: Float[torch.Tensor, "out in"], blocksize: int = 64) -> Bool[torch.Tensor, "out in"]:
    """True on every weight whose ``|w|`` equals its NF4 block's absmax (blocks of ``blocksize``
    consecutive elements of the flattened matrix, as bitsandbytes cuts them)."""
    from circuitforge.quant import block_absmax

    a = block_absmax(w, blocksize).repeat_interleave(blocksize)[: w.numel()].reshape(w.shape)
    return w.detach().abs().float() == a


def exclude_absmax(handle: ModelHandle, mask: Mask, blocksize: int = 64) -> tuple[Mask, int]:
    """``mask`` without the block-absmax weights, and how many masked weights that removed."""
    params = handle.named_parameters()
    out, dropped = {}, 0
    for n, m in mask.items():
        am = block_absmax_mask(params[n].detach(), blocksize)
        dropped += int((m & am).sum())
        out[n] = m & ~am
    return out, dropped


# -- step 2: forget gradient ----------------------------------------------------------------------------


def forget_gradient(
    handle: ModelHandle, forget: Task, mask: Mask, objective: str = "margin", *, margin: float = 1.0,
    beta: float = 0.1, ref_logprob: torch.Tensor | None = None, chunk: int = 16,
) -> tuple[float, dict[str, torch.Tensor]]:
    """``(F, g ⊙ M)``: the forget objective over all forget rows and its gradient, zero outside ``mask``.

    ``objective``: ``"margin"`` (push-away: :func:`~circuitforge.surgery.objectives.margin_loss`),
    ``"npo"`` (needs ``ref_logprob``, the reference answer log-probs per row) or ``"ga"`` (``−NLL``).
    ``F`` is the row-weighted mean over chunks. The descent direction is ``−g``.
    """
    params = {n: p for n, p in handle.named_parameters().items() if n in mask}
    total, n = 0.0, len(forget)
    with trainable(handle, params):
        for rows in row_chunks(n, chunk):
            if objective == "margin":
                b = answer_batch(handle, forget, rows, options=True)
                loss = margin_loss(sequence_logprob(forward(handle, b.tokens), b), b, margin)
            elif objective == "npo":
                if ref_logprob is None:
                    raise CircuitForgeError("the npo forget objective needs reference log-probs")
                b = answer_batch(handle, forget, rows)
                loss = npo_loss(sequence_logprob(forward(handle, b.tokens), b), ref_logprob[rows], beta)
            elif objective == "ga":
                b = answer_batch(handle, forget, rows)
                loss = -answer_nll(forward(handle, b.tokens), b)
            else:
                raise CircuitForgeError(f"unknown forget objective {objective!r}")
            (loss * len(rows) / n).backward()
            total += float(loss.detach()) * len(rows) / n
        grads = {k: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone() * mask[k].to(p.device)
                 for k, p in params.items()}
    return total, grads


# -- step 3: null space of the retain inputs --------------------------------------------------------------


@torch.no_grad()
def retain_second_moments(
    handle: ModelHandle, retain: Task, units: list[EditUnit], chunk: int = 16
) -> tuple[dict[tuple[str, int, int], Float[torch.Tensor, "k k"]], int]:
    """``C = mean_x x[cols] x[cols]ᵀ`` (float64) over every non-pad retain token, for each unit's inputs
    (keyed by :attr:`EditUnit.key`), and the number of tokens."""
    keys = sorted({u.key for u in units})
    by_module: dict[str, list[tuple[str, int, int]]] = {}
    for k in keys:
        by_module.setdefault(k[0], []).append(k)
    modules = {n.replace("._original_component", ""): m for n, m in handle.hf.named_modules()
               if isinstance(m, torch.nn.Linear)}
    sums = {k: torch.zeros(k[2] - k[1], k[2] - k[1], dtype=torch.float64) for k in keys}
    state: dict[str, Any] = {"valid": None, "n": 0}

    def hook_for(module: str) -> Any:
        def pre(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach()[state["valid"].to(args[0].device)].double().cpu()
            for k in by_module[module]:
                xs = x[:, k[1] : k[2]]
                sums[k] += xs.T @ xs
        return pre

    missing = [m for m in by_module if m not in modules]
    if missing:
        raise CircuitForgeError(f"no nn.Linear module named {missing[0]}")
    handles = [modules[m].register_forward_pre_hook(hook_for(m)) for m in by_module]
    try:
        for rows in row_chunks(len(retain), chunk):
            b = answer_batch(handle, retain, rows)
            state["valid"] = b.valid
            state["n"] += int(b.valid.sum())
            forward(handle, b.tokens)
    finally:
        for h in handles:
            h.remove()
    n = max(int(state["n"]), 1)
    return {k: v / n for k, v in sums.items()}, n


def nullspace_projector(
    second_moment: Float[torch.Tensor, "k k"], rel_threshold: float
) -> Float[torch.Tensor, "k k"]:
    """``P = U Uᵀ`` (float32) over the eigenvectors of ``C`` with eigenvalue ``≤ rel_threshold · λ_max``
    (all of them when ``C = 0``). Symmetric, idempotent; ``C P ≈ 0`` up to the threshold."""
    c = second_moment.double()
    evals, evecs = torch.linalg.eigh((c + c.T) / 2)
    top = float(evals.max()) if evals.numel() else 0.0
    keep = evals <= rel_threshold * top if top > 0 else torch.ones_like(evals, dtype=torch.bool)
    u = evecs[:, keep]
    return (u @ u.T).float()


def project(
    delta: Float[torch.Tensor, "r k"], projector: Float[torch.Tensor, "k k"]
) -> Float[torch.Tensor, "r k"]:
    """``Δ P``: each row of ``Δ`` projected onto the null space of the unit's retain inputs."""
    return delta @ projector.to(delta.device, delta.dtype)


# -- step 4: diagonal Fisher, budgeted selection -----------------------------------------------------------


def diagonal_fisher(
    handle: ModelHandle, retain: Task, mask: Mask, batch_size: int = 1, rows: int | None = None
) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher of the retain loss (mean answer NLL per token) for the masked matrices
    (full shape, zero outside the mask). ``batch_size > 1`` squares batch-summed gradients (faster,
    biased by the cross terms); ``rows`` uses only the first rows of ``retain``."""
    task = retain.head(rows) if rows is not None else retain
    params = {n: p for n, p in handle.named_parameters().items() if n in mask}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n_tok = 0
    with trainable(handle, params):
        for chunk in row_chunks(len(task), batch_size):
            b = answer_batch(handle, task, chunk)
            n_tok += int(b.targets[:, :-1].sum())
            for p in params.values():
                p.grad = None
            (-sequence_logprob(forward(handle, b.tokens), b).sum()).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2
    return {n: f / max(n_tok, 1) * mask[n].to(f.device) for n, f in fisher.items()}


def select_under_budget(
    gain: Float[torch.Tensor, " n"], cost: Float[torch.Tensor, " n"], budget: float, max_count: int | None = None
) -> Bool[torch.Tensor, " n"]:
    """Greedy: sort candidates with ``gain > 0`` by ``gain / cost`` (descending; zero cost first, then by
    gain; ties by index) and take the longest prefix whose cumulative cost is ``≤ budget`` (and at most
    ``max_count``). Deterministic."""
    ok = gain > 0
    ratio = torch.where(cost > 0, gain / cost.clamp(min=torch.finfo(cost.dtype).tiny), torch.full_like(gain, float("inf")))
    key = torch.where(ok, ratio, torch.full_like(ratio, float("-inf")))
    order = torch.argsort(key, descending=True, stable=True)
    zero_cost = ok & (cost <= 0)
    if zero_cost.any():  # among free moves, bigger gain first
        free = torch.nonzero(zero_cost)[:, 0]
        free = free[torch.argsort(gain[free], descending=True, stable=True)]
        rest = order[~torch.isin(order, free)]
        order = torch.cat([free, rest])
    n_ok = int(ok.sum())
    order = order[:n_ok]
    cum = torch.cumsum(cost[order].double(), 0)
    take = int((cum <= budget).sum())  # cum is non-decreasing: a prefix
    if max_count is not None:
        take = min(take, max_count)
    sel = torch.zeros_like(gain, dtype=torch.bool)
    sel[order[:take]] = True
    return sel


# -- step 5: the NF4 magnitude floor ---------------------------------------------------------------------


def apply_floor(
    w: Float[torch.Tensor, "out in"], direction: Float[torch.Tensor, "out in"], kappa: float,
    step_size: float = 0.0, blocksize: int = 64,
) -> Float[torch.Tensor, "out in"]:
    """Moves ``δ = sign(d) · max(step_size·|d|, κ · binwidth(w))`` where ``d ≠ 0``, zero elsewhere and
    wherever ``w`` is its block's absmax or ``|w + δ|`` would reach the block absmax (so no block's
    absmax changes and the code of every moved weight changes for κ > 1)."""
    from circuitforge.quant import bin_width, block_absmax

    if kappa < 1:
        raise CircuitForgeError("kappa must be ≥ 1")
    x = w.detach().float()
    bw = bin_width(x, "nf4", blocksize)
    mag = torch.maximum(step_size * direction.abs().float(), kappa * bw)
    delta = torch.sign(direction).float() * mag
    a = block_absmax(x, blocksize).repeat_interleave(blocksize)[: x.numel()].reshape(x.shape)
    ok = (direction != 0) & (x.abs() < a) & ((x + delta).abs() < a)
    return torch.where(ok, delta, torch.zeros_like(delta))


def verify_code_flips(
    base: dict[str, torch.Tensor], edited: ModelHandle, names: list[str], blocksize: int = 64
) -> dict[str, Any]:
    """Code flips of the edit, computed by :func:`circuitforge.quant.tensor_diff` (bit-exact NF4 codes of
    base and edited weights, each with its own absmax) over ``names``; totals and the flip rate."""
    from circuitforge.quant import tensor_diff

    params = edited.named_parameters()
    tot = {"n_changed": 0, "n_code_flips": 0, "n_absmax_changed_blocks": 0, "all_code_changes": 0}
    ratios = []
    for n in names:
        s, r = tensor_diff(base[n], params[n].detach().cpu(), "nf4", blocksize)
        ratios.append(r)
        for k in tot:
            tot[k] += s[k]
    import numpy as np

    rr = np.concatenate(ratios) if ratios else np.zeros(0)
    return {
        **tot,
        "code_flip_rate": tot["n_code_flips"] / tot["n_changed"] if tot["n_changed"] else 0.0,
        "collateral_code_changes": tot["all_code_changes"] - tot["n_code_flips"],
        "median_binwidth_to_update_ratio": float(np.median(rr)) if rr.size else None,
    }
