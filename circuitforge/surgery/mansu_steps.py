"""The steps of MANSU (Mechanistic-Aligned Null-Space Unlearning, arXiv 2605.15138), one function each.

Notation: an edited weight matrix ``W`` is ``[out, in]`` (``nn.Linear``); the circuit owns a block
``W[rows, cols]`` of it (an :class:`EditUnit`). ``F(θ)`` is the forget objective (minimised, see
:mod:`~circuitforge.surgery.objectives`), ``g = ∇F`` its gradient. Signs: a *direction* is a descent
direction (``−g`` and its projections); a *move* ``δ`` is the actual change of a weight.

1. :func:`circuit_mask` — the circuit's components (``a3.h1``, ``a3.kv0``, ``m2``...) → their 2-D weight
   slices (:func:`~circuitforge.models.component_params`) → one boolean mask per matrix, minus every
   NF4 block's absmax weight (:func:`exclude_absmax`), which MANSU never edits.
2. :func:`forget_gradient` — ``g`` restricted to the mask (zero outside).
3. :func:`retain_inputs`, :func:`move_cost`, :func:`output_change`, :func:`bounded_prefix` — the retain
   inputs ``x`` of every masked matrix (every non-pad retain token, captured once on the base model). A
   single move ``δ_rc`` costs ``δ_rc² E_t[x_tc² / ‖W x_t‖²]`` (its share of the mean per-token squared
   relative change of the matrix's retain outputs); candidates are ranked by forget gain ÷ that cost. The
   bound acts on the **applied sparse edit**: per matrix ``ρ = sqrt(E_t[‖Δ x_t‖² / ‖W x_t‖²])`` of the whole accumulated edit
   ``Δ`` (cross terms included) must stay ``≤`` the bound; of each step's candidates in a matrix, the
   longest rank-ordered prefix that keeps it there is applied.
4. :func:`apply_floor`, :func:`verify_code_flips` — every move is at least ``κ ×`` the weight's NF4 bin
   width (κ > 1), and it is refused if it would reach the block's absmax; since the absmax weight itself
   is never edited, each block's absmax — and with it every boundary — stays fixed, so the code of every
   edited weight changes by construction and no untouched weight's code changes. The flips are then
   verified with the quantization module's bit-exact code computation.
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int

from circuitforge.data import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.weights import component_params
from circuitforge.surgery._common import forward, trainable
from circuitforge.surgery.objectives import (
    answer_batch,
    margin_loss,
    npo_loss,
    row_chunks,
    sequence_logprob_at,
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
    params = handle.named_parameters()
    for node in nodes:
        for ps in component_params(handle, node, params):
            if ps.param.dim() != 2:
                continue
            rows, cols = ps.index
            units.append(EditUnit(ps.name, _as_slice(rows, ps.param.shape[0]), _as_slice(cols, ps.param.shape[1])))
    full = {u.name for u in units if (u.rows.stop - u.rows.start, u.cols.stop - u.cols.start) == tuple(params[u.name].shape)}
    kept: list[EditUnit] = []
    seen: set[tuple[str, int, int, int, int]] = set()  # a set, not `u in kept`: thousands of neuron units
    for u in units:  # a whole-matrix unit swallows the narrower ones; drop duplicates
        k = (u.name, u.rows.start, u.rows.stop, u.cols.start, u.cols.stop)
        if (u.name in full and (u.rows.stop - u.rows.start, u.cols.stop - u.cols.start) != tuple(params[u.name].shape)) or k in seen:
            continue
        seen.add(k)
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


def masked_index(mask: Mask) -> dict[str, torch.Tensor]:
    """The flat (row-major) indices of every matrix's masked weights, ``[k]`` ascending. MANSU keeps its
    per-weight quantities (gradients, Fisher, moves, ratios) at these entries only: with a 3% edit set a
    matrix-sized float tensor per quantity would hold 97% zeros (on Qwen2.5-0.5B each such set of tensors is
    1.4 GB, and holding several put the benchmark's MANSU run over 24 GB)."""
    return {n: m.flatten().nonzero().flatten() for n, m in mask.items()}


# -- step 2: forget gradient ----------------------------------------------------------------------------


def forget_gradient(
    handle: ModelHandle, forget: Task, mask: Mask, objective: str = "margin", *, margin: float = 1.0,
    beta: float = 0.1, ref_logprob: torch.Tensor | None = None, chunk: int = 16, positions: str = "all",
    at: dict[str, torch.Tensor] | None = None,
) -> tuple[float, dict[str, torch.Tensor]]:
    """``(F, g ⊙ M)``: the forget objective over all forget rows and its gradient, zero outside ``mask``
    (with ``at`` = :func:`masked_index` of the mask: only the masked entries, ``[k]`` per matrix in flat
    row-major order — the same values without a matrix-sized tensor per gradient).

    ``objective``: ``"margin"`` (push-away: :func:`~circuitforge.surgery.objectives.margin_loss`),
    ``"npo"`` (needs ``ref_logprob``, the reference answer log-probs per row) or ``"ga"`` (``−NLL``).
    ``F`` is the row-weighted mean over chunks. The descent direction is ``−g``. ``positions="subject"``:
    the masked weights collect gradient only at each row's subject tokens
    (:mod:`~circuitforge.surgery.positions`); ``"subject-mlp"``: only the masked MLP weights do (where ROME
    locates the stored association), attention weights collect it at every position; ``"all"``: every
    position.
    """
    from contextlib import nullcontext

    from circuitforge.surgery.positions import subject_mask, weight_grad_positions

    if positions not in ("all", "subject", "subject-mlp"):
        raise CircuitForgeError(f"positions must be 'all', 'subject' or 'subject-mlp', not {positions!r}")
    if objective not in ("margin", "npo", "ga"):
        raise CircuitForgeError(f"unknown forget objective {objective!r}")
    if objective == "npo" and ref_logprob is None:
        raise CircuitForgeError("the npo forget objective needs reference log-probs")
    params = {n: p for n, p in handle.named_parameters().items() if n in mask}
    at_subject = {"all": set(), "subject": set(params), "subject-mlp": {k for k in params if ".mlp." in k}}[positions]
    total, n = 0.0, len(forget)
    with trainable(handle, params):
        for rows in row_chunks(n, chunk):
            b = answer_batch(handle, forget, rows, options=objective == "margin")
            where = (weight_grad_positions(handle, at_subject, subject_mask(handle, forget, rows, b.row, b.tokens.shape[1]))
                     if at_subject else nullcontext())
            with where:   # only the continuation positions are unembedded (objectives.sequence_logprob_at)
                logp = sequence_logprob_at(handle, b, packed=not at_subject)
            if objective == "margin":
                loss = margin_loss(logp, b, margin)
            elif objective == "npo":
                assert ref_logprob is not None
                loss = npo_loss(logp, ref_logprob[rows], beta)
            else:   # −NLL per continuation token
                loss = logp.sum() / b.targets[:, :-1].sum().clamp(min=1)
            (loss * len(rows) / n).backward()
            total += float(loss.detach()) * len(rows) / n
        grads = {}
        for k, p in params.items():   # masked in place, each .grad released as it is taken (one copy held)
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = None
            grads[k] = g.detach().flatten()[at[k].to(p.device)] if at is not None else g.detach().mul_(mask[k].to(p.device))
    return total, grads


# -- step 3: retain inputs, the retain cost of a move, the bound on the applied edit --------------------------


@dataclass
class RetainInputs:
    """What the retain set feeds every masked matrix, captured once on the base model.

    Every token's input is divided by the norm of that token's output, ``x̃_t = x_t / ‖W x_t‖``, so that
    changes are measured *per token relative to that token's output*. Without this the bound is
    meaningless on models with massive activations: on SmolLM2 the first token's outputs hold 95–98% of
    ``Σ_t ‖W x_t‖²`` in the down-projections of layers 1, 2 and 29, so a pooled ratio allowed changes many
    times larger than every other token's output (measured: 3,251 one-bin moves passing a pooled 5% bound
    raised the retain NLL from 2.18 to 4.77).

    Attributes:
        x: HF parameter name → ``[tokens, k]`` normalised retain inputs ``x̃`` restricted to the masked
            columns ``cols`` (every non-pad retain token; float32).
        cols: name → ``[k]`` column indices (the columns holding a masked weight).
        col_sq: name → ``[in]`` mean ``x̃_c²`` over the retain tokens (zero outside ``cols``).
        out_sq: name → mean ``‖W x̃‖²`` over the retain tokens (1 up to tokens with a zero output).
        n_tokens: retain tokens seen.
    """

    x: dict[str, torch.Tensor]
    cols: dict[str, torch.Tensor]
    col_sq: dict[str, torch.Tensor]
    out_sq: dict[str, float]
    n_tokens: int


def _linear_modules(handle: ModelHandle, mask: Mask) -> tuple[dict[str, torch.nn.Linear], list[str]]:
    """The ``nn.Linear`` module of every HF parameter name (``.weight`` dropped) and the masked names, sorted
    (a clear error when a masked matrix has none)."""
    modules = {n.replace("._original_component", ""): m for n, m in handle.hf.named_modules()
               if isinstance(m, torch.nn.Linear)}
    names = sorted(mask)
    missing = [n for n in names if n.removesuffix(".weight") not in modules]
    if missing:
        raise CircuitForgeError(f"no nn.Linear module for {missing[0]}")
    return modules, names


@torch.no_grad()
def retain_inputs(handle: ModelHandle, retain: Task, mask: Mask, chunk: int = 16) -> RetainInputs:
    """Capture the retain inputs of every masked matrix (see :class:`RetainInputs`)."""
    modules, names = _linear_modules(handle, mask)
    cols = {n: mask[n].any(0).nonzero().flatten() for n in names}
    xs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    out_sq = dict.fromkeys(names, 0.0)
    state: dict[str, Any] = {"valid": None, "n": 0}

    def hook_for(name: str) -> Any:
        def fwd(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            v = state["valid"].to(args[0].device)
            x = args[0].detach()[v].float().cpu()
            y2 = (out.detach()[v].double().cpu() ** 2).sum(-1)  # ‖W x_t‖² per token
            scale = torch.where(y2 > 0, y2.rsqrt(), torch.zeros_like(y2)).float()
            xs[name].append(x[:, cols[name]] * scale[:, None])
            out_sq[name] += float((y2 > 0).sum())
        return fwd

    hooks = [modules[n.removesuffix(".weight")].register_forward_hook(hook_for(n)) for n in names]
    try:
        for rows in row_chunks(len(retain), chunk):
            b = answer_batch(handle, retain, rows)
            state["valid"] = b.valid
            state["n"] += int(b.valid.sum())
            forward(handle, b.tokens)
    finally:
        for h in hooks:
            h.remove()
    t = max(int(state["n"]), 1)
    x = {n: torch.cat(v) for n, v in xs.items()}
    col_sq = {}
    for n in names:
        c = torch.zeros(mask[n].shape[1])
        c[cols[n]] = (x[n].double() ** 2).mean(0).float()
        col_sq[n] = c
    return RetainInputs(x, cols, col_sq, {n: v / t for n, v in out_sq.items()}, t)


def move_cost(inp: RetainInputs, name: str, idx: torch.Tensor, n_in: int, move: Float[torch.Tensor, " k"],
              ) -> Float[torch.Tensor, " k"]:
    """Retain cost of each single move ``δ_rc`` on its own: ``δ_rc² · mean x̃_c² / mean ‖W x̃‖²`` — its share
    of the mean per-token squared relative change of the matrix's retain outputs. ``move``: the moves at the
    flat indices ``idx`` of the matrix ``name``, which has ``n_in`` columns (``c = idx mod n_in``)."""
    return move.float() ** 2 * inp.col_sq[name][idx % n_in] / max(inp.out_sq[name], 1e-30)


def retain_fisher(handle: ModelHandle, retain: Task, mask: Mask, at: dict[str, torch.Tensor] | None = None,
                  chunk: int = 16) -> dict[str, Float[torch.Tensor, "..."]]:
    """Diagonal empirical Fisher of the retain answer NLL on the masked weights, at the current weights:
    ``F_i = mean_rows (∂NLL_row / ∂w_i)²`` (zero outside ``mask``; float32 on the CPU; with ``at`` =
    :func:`masked_index`: ``[k]`` per matrix, the masked entries only). ``½ F_i δ_i²`` is the second-order
    retain-NLL cost of moving ``w_i`` by ``δ_i`` on its own — the loss-aware counterpart of :func:`move_cost`
    (which sees the matrix's inputs but not how much the retain answers depend on each output).

    Per-row gradients from one batched backward pass per ``chunk`` rows: a linear layer's weight gradient for
    row ``b`` is ``Σ_t δ_bt x_btᵀ`` (``x`` its input, ``δ`` the gradient at its output), so with the inputs
    captured in the forward pass and ``δ = ∂(Σ_b NLL_b)/∂y`` (rows are right-padded and causal, so row ``b``'s
    NLL depends on row ``b``'s tokens only) every row's gradient at the masked entries is
    ``Σ_t δ_bt[r] x_bt[c]``. The same values as one backward pass per row (up to float summation order;
    checked against that loop in the tests): on SmolLM2's 64 retain rows with a 3% mask 5.5 s instead of 19.6 s."""
    modules, names = _linear_modules(handle, mask)
    idx = at if at is not None else masked_index(mask)
    # each matrix's masked entries as (row, column) positions inside the sub-matrix of the rows and columns
    # that hold any of them (a neuron's gate/up row, its down column, a head's q/k/v rows or o columns)
    sub = {}
    for n in names:
        r, c = idx[n] // mask[n].shape[1], idx[n] % mask[n].shape[1]
        ur, uc = torch.unique(r), torch.unique(c)
        sub[n] = (ur, uc, torch.searchsorted(ur, r), torch.searchsorted(uc, c))
    fisher = {n: torch.zeros(len(idx[n]), dtype=torch.float32) for n in names}
    params = {n: p for n, p in handle.named_parameters().items() if n in mask}
    xs: dict[str, torch.Tensor] = {}
    ys: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Any:
        def fwd(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            xs[name], ys[name] = args[0].detach(), out
        return fwd

    hooks = [modules[n.removesuffix(".weight")].register_forward_hook(hook_for(n)) for n in names]
    try:
        with trainable(handle, params):
            for rows in row_chunks(len(retain), chunk):
                b = answer_batch(handle, retain, rows)
                n_tok = b.targets[:, :-1].sum(1).clamp(min=1).to(handle.device)
                loss = -(sequence_logprob_at(handle, b, packed=False) / n_tok).sum()   # Σ_rows NLL_row
                outs = [ys[n] for n in names]
                deltas = torch.autograd.grad(loss, outs, allow_unused=True)
                for n, d in zip(names, deltas, strict=True):
                    if d is None:
                        continue
                    ur, uc, ri, ci = (v.to(d.device) for v in sub[n])
                    for b0 in range(d.shape[0]):   # row b's gradient on the sub-matrix: Σ_t δ_bt[ur] x_bt[uc]ᵀ
                        g = d[b0][:, ur].float().T @ xs[n][b0][:, uc].float()
                        fisher[n] += (g[ri, ci] ** 2).cpu()
                xs.clear()
                ys.clear()
    finally:
        for h in hooks:
            h.remove()
    out = {n: f / max(len(retain), 1) for n, f in fisher.items()}
    if at is not None:
        return out
    dense = {}
    for n in names:
        d = torch.zeros(mask[n].numel(), dtype=torch.float32)
        d[idx[n]] = out[n]
        dense[n] = d.view(mask[n].shape)
    return dense


def output_change(inp: RetainInputs, name: str, delta: Float[torch.Tensor, "out in"]) -> float:
    """Relative change of the matrix's retain outputs under the weight change ``delta`` (zero outside
    the masked columns): ``sqrt(mean_t ‖Δ x_t‖² / ‖W x_t‖²)`` — the root mean per-token squared relative
    change over the base model's retain tokens (:class:`RetainInputs`), exact for the applied sparse
    edit, cross terms included."""
    d = delta.detach().float().cpu()[:, inp.cols[name]]
    rows = d.abs().sum(1) > 0
    if not bool(rows.any()):
        return 0.0
    y = inp.x[name] @ d[rows].T
    return float(((y.double() ** 2).sum() / inp.n_tokens / max(inp.out_sq[name], 1e-30)) ** 0.5)


def bounded_prefix(inp: RetainInputs, name: str, applied: Float[torch.Tensor, "out in"], idx: torch.Tensor,
                   values: torch.Tensor, bound: float) -> int:
    """The longest prefix of the candidate moves ``values`` at flat indices ``idx`` (in rank order) that,
    added to the already ``applied`` change, keeps :func:`output_change` ``≤ bound`` (bisection; the
    returned prefix is checked, so the bound holds for the edit actually applied)."""

    def rho(p: int) -> float:
        d = applied.detach().float().cpu().clone().flatten()
        d[idx[:p]] += values[:p].float().cpu()
        return output_change(inp, name, d.view(applied.shape))

    lo, hi = 0, len(idx)
    if rho(hi) <= bound:
        return hi
    while hi - lo > 1:  # invariant: rho(lo) ≤ bound < rho(hi)
        mid = (lo + hi) // 2
        if rho(mid) <= bound:
            lo = mid
        else:
            hi = mid
    return lo


# -- step 4: the NF4 magnitude floor ---------------------------------------------------------------------


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


def apply_floor_at(
    w: Float[torch.Tensor, "out in"], at: Int[torch.Tensor, " k"], direction: Float[torch.Tensor, " k"],
    kappa: float, step_size: float = 0.0, blocksize: int = 64,
) -> Float[torch.Tensor, " k"]:
    """:func:`apply_floor` at the entries ``at`` of ``w`` (flat, row-major) with ``direction`` given there
    (``[k]``): bitwise ``apply_floor(w, d)`` read at ``at`` for the ``d`` that is ``direction`` there and
    zero elsewhere, without computing the bin of every weight of the matrix (MANSU's candidates are a few
    percent of each matrix)."""
    from circuitforge.quant.bins import bin_width_from_scaled
    from circuitforge.quant.fakequant import scaled_at

    if kappa < 1:
        raise CircuitForgeError("kappa must be ≥ 1")
    x = w.detach().reshape(-1).float()[at]
    scaled, a = scaled_at(w, at, blocksize)   # normalized values and block absmax, the blocks reduced once
    mag = torch.maximum(step_size * direction.abs().float(), kappa * bin_width_from_scaled(scaled, a, "nf4"))
    delta = torch.sign(direction).float() * mag
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
