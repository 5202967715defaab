"""Statistics for the benchmark's claims: paired bootstrap CIs, paired tests, and CI-based verdicts.

Every accuracy the benchmark reports is a mean of per-item 0/1 outcomes, and every comparison is *paired*:
the same items are scored before and after an edit, in fp and in NF4, by method A and method B. So the
unit of resampling is the item (a row of paired outcomes), and with resampled splits the items are nested
in splits. :func:`bootstrap` resamples splits with replacement and then items within each drawn split
(a two-level, "cluster" bootstrap; with one split it is the ordinary paired bootstrap), and reports the
percentile interval of a statistic computed on the pooled resample.

With 5 splits the split level of the resample is coarse; the percentile interval then tends to be
narrow rather than wide, so a verdict of ``pass`` from a 5-split CI is evidence, not proof.

>>> import numpy as np
>>> before = [np.ones(8)]; after = [np.array([0, 0, 0, 0, 1, 1, 1, 1.0])]
>>> est = bootstrap([np.stack([before[0], after[0]], 1)], lambda x: float((x[:, 0] - x[:, 1]).mean()))
>>> est.value, est.lo <= 0.5 <= est.hi
(0.5, True)
>>> judge(est, 0.3, ">=")  # the CI reaches below 0.3
'undecided'
"""

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Verdict = Literal["pass", "fail", "undecided"]
Stat = Callable[[np.ndarray], float]
Outcomes = Sequence[float | int | bool] | np.ndarray
"""per-item values of one split (0/1 correctness, or any float)"""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap percentile interval.

    ``n`` is the number of items pooled, ``n_groups`` the number of splits they came from, ``n_boot`` the
    replicates that gave a finite statistic (a ratio with a zero denominator is dropped, see ``dropped``).
    """

    value: float | None
    lo: float | None
    hi: float | None
    n: int
    n_groups: int
    level: float = 0.95
    n_boot: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Estimate":
        return cls(**d)

    def spans(self, x: float) -> bool:
        """True when ``x`` lies inside the interval (or the interval is undefined)."""
        return self.lo is None or self.hi is None or self.lo <= x <= self.hi


def _finite(x: float | None) -> bool:
    return x is not None and bool(np.isfinite(x))


def bootstrap(groups: Sequence[np.ndarray], stat: Callable[[np.ndarray], Any], *, n_boot: int = 2000, seed: int = 0,
              level: float = 0.95) -> Estimate:
    """Two-level paired bootstrap of ``stat`` over ``groups`` (one array of shape ``(items, k)`` per split).

    Each replicate draws as many splits as there are, with replacement, and within each drawn split as
    many rows as it has, with replacement; ``stat`` gets the drawn rows stacked (``(total, k)``) and
    returns a float (``nan``/``inf``/``None`` for undefined, e.g. a ratio with a zero denominator; such
    replicates are dropped and counted). The point estimate is ``stat`` on all rows.
    """
    arrs = [np.asarray(g, dtype=float).reshape(len(g), -1) for g in groups if len(g)]
    if not arrs:
        return Estimate(None, None, None, 0, 0, level)
    allrows = np.concatenate(arrs)
    value = stat(allrows)
    value = float(value) if _finite(value) else None
    rng = np.random.default_rng(seed)
    reps: list[float] = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(arrs), len(arrs))
        parts = [arrs[g][rng.integers(0, len(arrs[g]), len(arrs[g]))] for g in pick]
        v = stat(np.concatenate(parts))
        if _finite(v):
            reps.append(float(v))
    if not reps:
        return Estimate(value, None, None, len(allrows), len(arrs), level, 0, n_boot)
    a = (1 - level) / 2
    lo, hi = np.quantile(reps, [a, 1 - a])
    return Estimate(value, float(lo), float(hi), len(allrows), len(arrs), level, len(reps), n_boot - len(reps))


def mean_diff(groups_a: Sequence[Outcomes], groups_b: Sequence[Outcomes], **kw: Any) -> Estimate:
    """Paired mean of ``a − b`` (e.g. base correct − edited correct = accuracy drop), per-split pairs."""
    gs = [np.stack([np.asarray(a, float), np.asarray(b, float)], 1) for a, b in zip(groups_a, groups_b, strict=True)]
    return bootstrap(gs, lambda x: float((x[:, 0] - x[:, 1]).mean()), **kw)


def mean(groups: Sequence[Outcomes], **kw: Any) -> Estimate:
    """Mean of per-item values (e.g. accuracy from 0/1 outcomes)."""
    return bootstrap([np.asarray(g, float)[:, None] for g in groups], lambda x: float(x[:, 0].mean()), **kw)


def _ratio(x: np.ndarray) -> float:
    den = x[:, 1].mean()
    return float(x[:, 0].mean() / den) if den > 0 else float("nan")


def ratio_of_means(groups_num: Sequence[Outcomes], groups_den: Sequence[Outcomes], **kw: Any) -> Estimate:
    """Paired ratio mean(num) ÷ mean(den) (undefined replicates, den ≤ 0, are dropped and counted)."""
    gs = [np.stack([np.asarray(a, float), np.asarray(b, float)], 1) for a, b in zip(groups_num, groups_den, strict=True)]
    return bootstrap(gs, _ratio, **kw)


def paired_bootstrap_p(groups_a: Sequence[Outcomes], groups_b: Sequence[Outcomes], *,
                       n_boot: int = 2000, seed: int = 0) -> float:
    """Two-sided bootstrap p-value for mean(a − b) = 0: twice the smaller share of replicates on either
    side of 0 (ties count half), capped at 1."""
    gs = [np.stack([np.asarray(a, float), np.asarray(b, float)], 1) for a, b in zip(groups_a, groups_b, strict=True)]
    arrs = [g for g in gs if len(g)]
    rng = np.random.default_rng(seed)
    below = above = 0.0
    for _ in range(n_boot):
        pick = rng.integers(0, len(arrs), len(arrs))
        x = np.concatenate([arrs[g][rng.integers(0, len(arrs[g]), len(arrs[g]))] for g in pick])
        d = float((x[:, 0] - x[:, 1]).mean())
        below += (d < 0) + 0.5 * (d == 0)
        above += (d > 0) + 0.5 * (d == 0)
    return float(min(1.0, 2 * min(below, above) / n_boot))


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test on paired 0/1 outcomes: ``b`` = a right & b wrong, ``c`` = a wrong & b right."""

    b: int
    c: int
    p: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def mcnemar(a: Outcomes, b: Outcomes) -> McNemar:
    """Exact (binomial) two-sided McNemar test; p = 1 when there are no discordant pairs."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError("mcnemar needs paired outcomes of equal length")
    x, y = np.asarray(a, bool), np.asarray(b, bool)
    nb, nc = int((x & ~y).sum()), int((~x & y).sum())
    p = 1.0 if nb + nc == 0 else float(binomtest(nb, nb + nc, 0.5).pvalue)
    return McNemar(nb, nc, p)


def judge(est: Estimate, threshold: float, direction: Literal[">=", "<="]) -> Verdict:
    """``pass`` when the whole CI clears the threshold on the required side, ``fail`` when the whole CI is
    on the wrong side, ``undecided`` otherwise (including an undefined CI).

    ``">="`` (e.g. forget drop ≥ 0.30): pass iff lo ≥ t, fail iff hi < t.
    ``"<="`` (e.g. retain drop ≤ 0.05, PTQ gap ≤ 0): pass iff hi ≤ t, fail iff lo > t.
    """
    if est.lo is None or est.hi is None:
        return "undecided"
    if direction == ">=":
        return "pass" if est.lo >= threshold else "fail" if est.hi < threshold else "undecided"
    if direction == "<=":
        return "pass" if est.hi <= threshold else "fail" if est.lo > threshold else "undecided"
    raise ValueError(f"direction must be '>=' or '<=', not {direction!r}")


def spearman_ci(xs: Outcomes, ys: Outcomes, *, zs: Outcomes | None = None, n_boot: int = 2000, seed: int = 0,
                level: float = 0.95) -> Estimate:
    """Spearman's ρ of paired runs with a bootstrap CI over runs (replicates with a constant side dropped).

    With ``zs``: the *partial* Spearman ρ of x and y controlling for z — the Pearson correlation of x's and
    y's ranks after each is residualised (least squares with an intercept) on z's ranks, so that a shared
    dependence on z (e.g. how much a run forgot) does not count as x predicting y."""
    from scipy.stats import rankdata, spearmanr

    def rho(x: np.ndarray) -> float:
        if len(x) < 3 + (zs is not None) or np.ptp(x[:, 0]) == 0 or np.ptp(x[:, 1]) == 0:
            return float("nan")
        if zs is None:
            return float(spearmanr(x[:, 0], x[:, 1]).statistic)
        r = np.stack([rankdata(x[:, j]) for j in range(3)], 1)
        a = np.stack([np.ones(len(r)), r[:, 2]], 1)
        res = [r[:, j] - a @ np.linalg.lstsq(a, r[:, j], rcond=None)[0] for j in (0, 1)]
        den = float(np.linalg.norm(res[0]) * np.linalg.norm(res[1]))
        return float(res[0] @ res[1]) / den if den > 1e-12 else float("nan")

    cols = [np.asarray(xs, float), np.asarray(ys, float)] + ([np.asarray(zs, float)] if zs is not None else [])
    pts = np.stack(cols, 1) if len(xs) else np.zeros((0, len(cols)))
    return bootstrap([pts], rho, n_boot=n_boot, seed=seed, level=level)
