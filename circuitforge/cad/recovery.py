"""Recovery curves from layer-hybrid margins, with paired bootstrap CIs, and the erasure score.

Definitions (``n`` = number of layers; margins from :mod:`.hybrids`, per example, signed):

* ``R_L = Σ_i margin(H_L)_i / Σ_i margin(M₀)_i`` for ``L = 0..n`` (ratio of means over examples);
* ``own = Σ_i margin(M₁)_i / Σ_i margin(M₀)_i`` — how much of M₀'s answer preference M₁ itself keeps;
* on retain rows the same quantities (``R^r_L``, ``own^r``) measure *specificity* and whether the hybrids
  are meaningful at all (a model with another residual basis fails retain hybrids too);
* **erasure score** ``E = mean_{1 ≤ L < n} [clip(R^r_L, 0, 1) − clip(R^f_L, 0, 1)]`` over the hybrid layers
  strictly inside the depth — the share of depth at which the forget answer is gone from M₁'s residual
  *beyond* what the same hybrids lose on retain rows. ``E ≈ 0``: at every depth M₀'s later layers read the
  forget answer back out of M₁ (suppression, or no change); ``E ≈ 1``: the answer is missing from M₁'s
  residual right after the first block (erasure). Without retain rows ``R^r_L ≡ 1``. ``L = n`` is left
  out: there M₀ keeps no block to read the answer with, only its readout, so ``R_n`` is M₁'s behaviour
  (what rule 1 of the verdict already reads as ``own``), not recoverability — with it in the mean a
  suppression in the last block alone scored up to ``1/n`` of the depth, above the erasure threshold on
  the 4-layer tiny model (format ``circuitforge.cad/2`` and earlier averaged ``L = 1..n``). A model or
  hybrid grid with no layer inside (``layers == [0, n]``) falls back to ``L = n``.
* **basis** ``B = mean_{L=0..⌈n/2⌉} clip(R^r_L, 0, 1)`` (retain recovery over the first half of the
  depth, where a fine-tuned M₁'s residual still resembles M₀'s): below the calibrated threshold the hybrids
  are not interpretable (M₁ does not speak M₀'s residual language). 1 without retain rows.

**Reverse hybrids** (:func:`reverse_recovery`; the "both ways" half of the evidence): ``H'_L`` runs M₀'s
embedding and blocks ``< L`` and M₁'s blocks ``≥ L`` and M₁'s readout; ``R'_L = Σ_i margin(H'_L)_i / Σ_i
margin(M₀)_i``. Where M₁'s remaining blocks still block an answer handed to them intact, ``R'_L`` stays
low: a late gate (suppression) keeps ``R'_L`` low up to its layer, an early erasure lets ``R'_L`` return to
1 right after the edited blocks. **Suppression share** ``S = mean_L [clip(R'^r_L, 0, 1) − clip(R'^f_L, 0,
1)]`` over all hybrid layers: the share of depth from which M₁'s own later computation removes the forget
answer beyond what it removes on retain rows. Evidence only; the verdict (:mod:`.verdict`) does not read it.

CIs: percentile bootstrap (``n_boot`` resamples, 95%) resampling forget and retain examples
independently, paired across models (the same resampled rows for M₀, M₁ and every hybrid).
"""

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from circuitforge.cad.hybrids import HybridMargins


def _ratio(num: Float[torch.Tensor, "... batch"], den: Float[torch.Tensor, " batch"]) -> Float[torch.Tensor, "..."]:
    d = den.sum(-1)
    return num.sum(-1) / (d if float(d) != 0.0 else 1e-12)


def curves(hm: HybridMargins, idx: torch.Tensor | None = None) -> tuple[Float[torch.Tensor, " layers"], float]:
    """``(R_L for L = 0..n, own)`` on the rows ``idx`` (all when None)."""
    if idx is None:
        idx = torch.arange(hm.base.shape[0])
    b = hm.base[idx]
    return _ratio(hm.hybrid[:, idx], b), float(_ratio(hm.own[idx], b))


def erasure_score(rf: Float[torch.Tensor, " layers"], rr: Float[torch.Tensor, " layers"] | None,
                  layers: list[int]) -> tuple[float, float]:
    """``(E, B)`` from forget and retain recovery curves at hybrid layers ``layers`` (ascending, ending at
    ``n``; see module doc)."""
    L = torch.tensor(layers)
    deep = (L >= 1) & (L < layers[-1])
    if not bool(deep.any()):
        deep = L >= 1
    f = rf[deep].clamp(0, 1)
    r = rr[deep].clamp(0, 1) if rr is not None else torch.ones_like(f)
    early = L <= (layers[-1] + 1) // 2
    basis = float(rr[early].clamp(0, 1).mean()) if rr is not None else 1.0
    return float((r - f).mean()), basis


def _ci(x: torch.Tensor) -> list[float]:
    return [float(torch.quantile(x, 0.025)), float(torch.quantile(x, 0.975))]


@dataclass(frozen=True)
class Recovery:
    """Recovery evidence (JSON-ready via :meth:`to_dict`)."""

    forget: dict[str, Any]
    retain: dict[str, Any] | None
    erasure_score: float
    erasure_score_ci: list[float]
    basis: float
    basis_ci: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"forget": self.forget, "retain": self.retain, "erasure_score": self.erasure_score,
                "erasure_score_ci": self.erasure_score_ci, "basis": self.basis, "basis_ci": self.basis_ci}


def _side(hm: HybridMargins, boots: list[torch.Tensor]) -> tuple[dict[str, Any], torch.Tensor, list[torch.Tensor]]:
    r, own = curves(hm)
    bs = [curves(hm, i) for i in boots]
    br = torch.stack([c for c, _ in bs])
    bo = torch.tensor([o for _, o in bs])
    d = {"layers": list(hm.layers), "recovery": [float(x) for x in r],
         "recovery_ci": [_ci(br[:, L]) for L in range(r.shape[0])], "own": own, "own_ci": _ci(bo),
         "base_margin": [float(x) for x in hm.base], "own_margin": [float(x) for x in hm.own],
         "per_example_recovery": [[float(x) for x in row] for row in (hm.hybrid / hm.base.where(hm.base != 0, torch.full_like(hm.base, 1e-12)))],
         "n": int(hm.base.shape[0])}
    return d, r, [br[k] for k in range(br.shape[0])]


def recovery(forget: HybridMargins, retain: HybridMargins | None, n_boot: int = 1000, seed: int = 0) -> Recovery:
    """Recovery curves, ``E`` and ``B`` with paired bootstrap 95% CIs (see module doc)."""
    g = torch.Generator().manual_seed(seed)
    nf = forget.base.shape[0]
    fb = [torch.randint(nf, (nf,), generator=g) for _ in range(n_boot)]
    f_d, rf, rf_b = _side(forget, fb)
    if retain is not None:
        nr = retain.base.shape[0]
        rb = [torch.randint(nr, (nr,), generator=g) for _ in range(n_boot)]
        r_d, rr, rr_b = _side(retain, rb)
    else:
        r_d, rr, rr_b = None, None, [None] * n_boot  # type: ignore[list-item]
    if retain is not None and retain.layers != forget.layers:
        raise ValueError("forget and retain hybrids must use the same layers")
    e, b = erasure_score(rf, rr, forget.layers)
    boot = torch.tensor([erasure_score(x, y, forget.layers) for x, y in zip(rf_b, rr_b, strict=True)])
    return Recovery(f_d, r_d, e, _ci(boot[:, 0]), b, _ci(boot[:, 1]))


def reverse_recovery(forget: HybridMargins, retain: HybridMargins | None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Reverse recovery curves ``R'_L`` and the suppression share ``S`` with bootstrap 95% CIs (module doc).

    ``forget``/``retain``: :func:`~circuitforge.cad.hybrids.hybrid_margins` called with the roles swapped
    (``hybrid_margins(M₁, M₀, task)``), so that ``.hybrid`` holds ``H'_L``, ``.own`` M₀'s margins (the
    denominator) and ``.base`` M₁'s."""
    g = torch.Generator().manual_seed(seed)

    def side(hm: HybridMargins) -> tuple[torch.Tensor, torch.Tensor]:
        n = hm.own.shape[0]
        r = _ratio(hm.hybrid, hm.own)
        boots = torch.stack([_ratio(hm.hybrid[:, i], hm.own[i]) for i in (torch.randint(n, (n,), generator=g) for _ in range(n_boot))])
        return r, boots

    rf, bf = side(forget)
    rr, br = side(retain) if retain is not None else (torch.ones_like(rf), torch.ones_like(bf))
    share = float((rr.clamp(0, 1) - rf.clamp(0, 1)).mean())
    bs = (br.clamp(0, 1) - bf.clamp(0, 1)).mean(1)
    return {"layers": list(forget.layers), "forget": [float(x) for x in rf], "forget_ci": [_ci(bf[:, j]) for j in range(rf.shape[0])],
            "retain": [float(x) for x in rr] if retain is not None else None,
            "retain_ci": [_ci(br[:, j]) for j in range(rr.shape[0])] if retain is not None else None,
            "suppression_share": share, "suppression_share_ci": _ci(bs)}
