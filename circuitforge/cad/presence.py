"""Answer presence: is the forget answer still *written* in M₁'s residual stream, read with a lens fitted on M₀?

Layer hybrids (:mod:`.hybrids`) ask whether M₀'s blocks ``≥ L`` can still *compute* the answer from M₁'s
residual at ``L``. Below an edit they always can (the residual there is M₀'s), so a gate in block ``k``
and an erasure in block ``k`` give the same curve: the erasure score counts the depth after a gate as
erased (the ``mid-ascent`` controls of ``benchmarks/cad_validation.py``: ascent on block n/2 only was
called erasure). What tells a gate from an erasure is whether the answer was already *in* the residual
where M₁ still has it. A linear lens cannot recall a fact, only read one that is there, so:

* **lens** (:func:`fit_base_lens`): per block input ``L = 0..n−1`` an affine map ``[d+1, d]`` from M₀'s
  residual to M₀'s final residual (the input of the final norm), ridge least squares (λ · rows) over every
  real prompt position of texts that are *not* the forget rows (retain and unrelated rows: the lens must
  not learn the forget facts themselves), read through M₀'s final norm and unembedding;
* ``a_L(M)`` (:func:`lens_margins`) = per forget row ``i``, the margin (answer − mean wrong option, as in
  :mod:`.hybrids`) that M₀'s lens and readout give on M's residual at the row's last prompt position
  (``L = n``: M's final residual through M₀'s readout, no lens), **minus the mean margin of row i's
  options read on the other forget rows' residuals**: only the part of the reading that belongs to row
  i's own subject counts. Without that contrast a model that never learnt the facts still reads about 0.2
  of M₀'s interior answer (measured on the pretrained-pair oracle): a lens reads the domain's answer
  prior, which no edit of one fact's recall has to remove;
* ``w_L = clip(Σ_i a_L(M₀)_i / Σ_i a_n(M₀)_i, 0, 1)`` (``a_n(M₀)``: M₀'s final reading, its own
  readout) — how much of its final answer M₀ has already written at ``L``; ``P_L = Σ_i a_L(M₁)_i / Σ_i a_L(M₀)_i`` — how much of *that* M₁ still
  carries;
* **presence** ``Π = Σ_L w_L clip(P_L, 0, 1) / Σ_L w_L`` over the interior layers ``1 ≤ L < n``, with a
  percentile bootstrap CI over forget rows. ``Π ≈ 1``: the answer M₀ writes is still written in M₁ (a gate
  after it, or no change); ``Π ≈ 0``: it is gone from the residual wherever M₀ had it. NaN when M₀'s lens
  reads nothing of the answer at any interior layer (``Σ w_L = 0``): then presence says nothing.

Sign conventions: margins positive = the answer is preferred. Presence needs the residual basis hybrids
need (M₁ fine-tuned from M₀): the verdict checks the basis first. The verdict (:mod:`.verdict`) reads Π's
CI: a model whose answer is still present is not called erasure.
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from circuitforge.cad.hybrids import margin_batch, margins, residuals
from circuitforge.data.scoring import pad_batch
from circuitforge.data.task import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle

LAMBDA = 1e-2
"""Ridge strength per fitted position (``λ · rows`` on the normal equations)."""


@dataclass(frozen=True)
class BaseLens:
    """M₀'s lens: ``maps[L]`` ``[d_model + 1, d_model]`` (affine, bias in the last row) for block inputs
    ``L = 0..n−1``; ``positions``: how many residual vectors it was fitted on; ``tasks``: their identities."""

    maps: list[Float[torch.Tensor, "d1 d_model"]]
    base_sha256: str
    positions: int
    tasks: list[dict[str, Any]]


_LENSES: dict[tuple[Any, ...], BaseLens] = {}


@torch.no_grad()
def fit_base_lens(base: ModelHandle, tasks: list[Task], lam: float = LAMBDA) -> BaseLens:
    """Fit M₀'s lens on the prompts of ``tasks`` (module doc); memoised in-process (4 entries) by the
    weights, the rows and ``lam``."""
    tasks = [t for t in tasks if t is not None and len(t)]
    if not tasks:
        raise CircuitForgeError("the presence lens needs rows to fit on (retain or unrelated rows)")
    key = (base.sha256, tuple(t.sha256 for t in tasks), float(lam))
    if key in _LENSES:
        return _LENSES[key]
    n = base.n_layers
    xs: list[list[torch.Tensor]] = [[] for _ in range(n + 1)]
    for t in tasks:
        texts = [str(getattr(it, "prompt", "") or getattr(it, "question", "")) for it in t.items]
        seqs = [base.to_tokens(x)[0].tolist() for x in texts if x]
        for g in range(0, len(seqs), 32):
            chunk = seqs[g : g + 32]
            tokens = pad_batch(chunk)
            last = torch.tensor([len(s) - 1 for s in chunk])
            res, _ = residuals(base, tokens, last)
            mask = torch.arange(tokens.shape[1])[None, :] <= last[:, None]
            for L, r in enumerate(res):
                xs[L].append(r.float().cpu()[mask])
    y = torch.cat(xs[-1])
    if len(y) < 2:
        raise CircuitForgeError("the presence lens needs at least 2 prompt positions to fit on")
    maps = []
    for L in range(n):
        x = torch.cat(xs[L])
        x1 = torch.cat([x, torch.ones(len(x), 1)], 1).double()
        eye = torch.eye(x1.shape[1], dtype=torch.float64)
        maps.append(torch.linalg.solve(x1.T @ x1 + lam * len(x) * eye, x1.T @ y.double()).float())
    lens = BaseLens(maps, base.sha256, len(y), [t.identity() for t in tasks])
    if len(_LENSES) >= 4:
        _LENSES.pop(next(iter(_LENSES)))
    _LENSES[key] = lens
    return lens


def _specific(m: Float[torch.Tensor, "resid rows"]) -> Float[torch.Tensor, " rows"]:
    """``m[j, i]`` = row ``i``'s margin read on row ``j``'s residual → ``m[i, i] − mean_{j≠i} m[j, i]``: the
    part of the reading that belongs to row ``i``'s own prompt (module doc)."""
    k = m.shape[0]
    if k < 2:
        return m.diagonal().clone()
    diag = m.diagonal()
    return diag - (m.sum(0) - diag) / (k - 1)


@torch.no_grad()
def lens_margins(base: ModelHandle, lens: BaseLens, handle: ModelHandle, task: Task,
                 specific: bool = True,
                 resid: list[Float[torch.Tensor, "batch pos d_model"]] | None = None) -> Float[torch.Tensor, "layers batch"]:
    """``[n+1, batch]``: per block input ``L`` the margin M₀'s lens and readout give on ``handle``'s
    residual at each forget row's last prompt position (row ``n``: ``handle``'s final residual through
    M₀'s readout, no lens). ``specific`` (default): minus the mean margin of the same row's options read on
    the *other* forget rows' residuals (module doc). ``resid``: ``handle``'s residuals on ``task`` when
    already computed (:func:`~circuitforge.cad.hybrids.model_residuals`; one forward saved)."""
    mb = margin_batch(handle, task)
    res = resid if resid is not None else residuals(handle, mb.tokens, mb.last)[0]
    rows = torch.arange(len(mb.last))
    p = next(base.bridge.parameters())
    out = []
    for L, r in enumerate(res):
        x = r[rows, mb.last.to(r.device)].float().cpu()
        if L < len(lens.maps):
            x = torch.cat([x, torch.ones(len(x), 1)], 1) @ lens.maps[L]
        lg = base.bridge.unembed(base.bridge.ln_final(x[:, None, :].to(device=p.device, dtype=p.dtype)))[:, 0].float().cpu()
        if not specific:
            out.append(margins(lg, mb))
            continue
        a = lg[:, mb.answer]                                                   # [resid j, row i]
        o = lg[:, mb.others]                                                   # [resid j, row i, k]
        m = a - (o * mb.other_mask).sum(-1) / mb.other_mask.sum(-1)
        out.append(_specific(m))
    return torch.stack(out)


def presence_score(a0: Float[torch.Tensor, "layers batch"], a1: Float[torch.Tensor, "layers batch"],
                   idx: torch.Tensor | None = None) -> tuple[float, list[float], list[float]]:
    """``(Π, P_L, w_L)`` for ``L = 0..n`` from lens margins of M₀ and M₁ on the rows ``idx`` (all when
    None); row ``n`` of ``a0`` is M₀'s own final margin (module doc)."""
    if idx is not None:
        a0, a1 = a0[:, idx], a1[:, idx]
    s0, s1 = a0.sum(1), a1.sum(1)
    m = float(s0[-1])
    n = a0.shape[0] - 1
    w = (s0 / m).clamp(0, 1) if m > 0 else torch.zeros_like(s0)
    p = torch.where(s0.abs() > 1e-9, s1 / torch.where(s0.abs() > 1e-9, s0, torch.ones_like(s0)), torch.zeros_like(s1))
    wi = w[1:n]
    pi = float((wi * p[1:n].clamp(0, 1)).sum() / wi.sum()) if float(wi.sum()) > 0 else float("nan")
    return pi, [float(x) for x in p], [float(x) for x in w]


def presence(base: ModelHandle, edited: ModelHandle, task: Task, lens: BaseLens, n_boot: int = 1000,
             seed: int = 0, resid: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> dict[str, Any]:
    """Π of ``edited`` against ``base`` on the forget rows ``task`` with its 95% bootstrap CI (over rows),
    the per-layer ``P_L`` and M₀'s written share ``w_L`` (``L = 0..n``), and the lens' fit size.
    ``resid``: (M₀'s, M₁'s) residuals on ``task`` when already computed (two forwards saved)."""
    r0, r1 = resid if resid is not None else (None, None)
    a0 = lens_margins(base, lens, base, task, resid=r0)
    a1 = lens_margins(base, lens, edited, task, resid=r1)
    pi, p, w = presence_score(a0, a1)
    g = torch.Generator().manual_seed(seed)
    k = a0.shape[1]
    vals = torch.tensor([presence_score(a0, a1, torch.randint(k, (k,), generator=g))[0] for _ in range(n_boot)])
    ok = vals[~torch.isnan(vals)]
    ci = ([float(torch.quantile(ok, 0.025)), float(torch.quantile(ok, 0.975))] if len(ok) >= max(10, n_boot // 2)
          else [float("nan"), float("nan")])
    return {"presence": pi, "presence_ci": ci, "per_layer": p, "base_written_share": w,
            "lens_positions": lens.positions, "lens_tasks": lens.tasks}
