"""eval.stats against hand-computed cases: bootstrap intervals whose distribution can be enumerated, the
exact McNemar p, the normal-approximation width on a large sample, and the CI-based verdicts."""

import math

import numpy as np
import pytest

from circuitforge.eval.stats import (
    Estimate,
    bootstrap,
    judge,
    mcnemar,
    mean,
    mean_diff,
    paired_bootstrap_p,
    ratio_of_means,
    spearman_ci,
)


def test_two_item_bootstrap_matches_enumeration():
    # d = [1, 0]: a resample of 2 items has mean 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so the 95% percentile
    # interval is [0, 1] and the point estimate 0.5.
    est = mean_diff([[1, 1]], [[0, 1]], n_boot=4000)
    assert est.value == 0.5 and est.lo == 0.0 and est.hi == 1.0
    assert est.n == 2 and est.n_groups == 1 and est.n_boot == 4000


def test_split_level_resampling():
    # two splits, all-ones and all-zeros: within-split resampling changes nothing, so the replicate mean is
    # 1 (both draws split 0, p 1/4), 0 (p 1/4) or 0.5 (p 1/2); an item-only bootstrap would give ~[0.25, 0.75]
    est = mean([[1, 1, 1, 1], [0, 0, 0, 0]], n_boot=4000)
    assert est.value == 0.5 and (est.lo, est.hi) == (0.0, 1.0) and est.n_groups == 2
    reps = [bootstrap([np.ones((4, 1)), np.zeros((4, 1))], lambda x: float(x.mean()), n_boot=400, seed=s).value
            for s in range(3)]
    assert reps == [0.5, 0.5, 0.5]


def test_constant_difference_has_a_point_interval():
    est = mean_diff([[1] * 10, [1] * 6], [[0] * 10, [0] * 6])
    assert (est.value, est.lo, est.hi) == (1.0, 1.0, 1.0)


def test_large_sample_width_matches_normal_approximation():
    x = np.array([1.0, 0.0] * 200)  # p = 0.5, n = 400: half-width 1.96 * sqrt(0.25 / 400) = 0.049
    est = mean([x], n_boot=4000, seed=1)
    assert est.value == 0.5
    assert est.hi - 0.5 == pytest.approx(0.049, abs=0.008) and 0.5 - est.lo == pytest.approx(0.049, abs=0.008)


def test_deterministic_given_seed():
    g = [np.random.default_rng(0).integers(0, 2, 30)]
    assert mean(g, seed=3) == mean(g, seed=3)
    assert mean(g, seed=3).lo is not None


def test_ratio_drops_undefined_replicates():
    # num = [1, 0], den = [1, 0]: a replicate drawing the second item twice has den 0 and is dropped (1/4)
    est = ratio_of_means([[1, 0]], [[1, 0]], n_boot=4000)
    assert est.value == 1.0 and est.lo == 1.0 and est.hi == 1.0
    assert est.dropped == pytest.approx(1000, rel=0.15) and est.n_boot + est.dropped == 4000
    none = ratio_of_means([[1, 1]], [[0, 0]])
    assert none.value is None and none.lo is None and judge(none, 0.5, "<=") == "undecided"


def test_mcnemar_exact():
    # b = 1 (a right, b wrong), c = 5: p = 2 * P(X <= 1 | n=6, 1/2) = 2 * 7/64
    a = [1, 0, 0, 0, 0, 0, 1, 1]
    b = [0, 1, 1, 1, 1, 1, 1, 0]
    r = mcnemar(a, b)
    assert (r.b, r.c) == (2, 5)
    assert r.p == pytest.approx(2 * (1 + 7 + 21) / 128)  # n = 7: 2 * P(X <= 2) = 2 * 29/128
    r1 = mcnemar([1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1])
    assert (r1.b, r1.c) == (1, 5) and r1.p == pytest.approx(14 / 64)
    assert mcnemar([1, 0], [1, 0]).p == 1.0
    with pytest.raises(ValueError):
        mcnemar([1], [1, 0])


def test_paired_bootstrap_p():
    assert paired_bootstrap_p([[1, 0, 1]], [[1, 0, 1]]) == 1.0  # identical: every replicate difference is 0
    assert paired_bootstrap_p([[1] * 20], [[0] * 20]) == 0.0
    p = paired_bootstrap_p([[1] * 11 + [0] * 9], [[0] * 11 + [1] * 9], n_boot=2000)
    assert 0.3 < p <= 1.0  # 11 vs 9 discordant pairs: no evidence


@pytest.mark.parametrize(("lo", "hi", "t", "d", "want"), [
    (0.35, 0.6, 0.30, ">=", "pass"), (0.30, 0.6, 0.30, ">=", "pass"), (0.1, 0.29, 0.30, ">=", "fail"),
    (0.2, 0.4, 0.30, ">=", "undecided"), (0.0, 0.04, 0.05, "<=", "pass"), (0.06, 0.2, 0.05, "<=", "fail"),
    (-0.02, 0.08, 0.05, "<=", "undecided"), (0.0, 0.0, 0.0, "<=", "pass"), (-0.03, 0.016, 0.0, "<=", "undecided"),
])
def test_judge(lo, hi, t, d, want):
    assert judge(Estimate((lo + hi) / 2, lo, hi, 10, 1), t, d) == want


def test_judge_rejects_bad_direction():
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime type check under pytest
        judge(Estimate(0.0, 0.0, 0.0, 1, 1), 0.0, ">")  # type: ignore[arg-type]


def test_spearman_ci():
    est = spearman_ci([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12], n_boot=500)
    assert est.value == pytest.approx(1.0) and est.lo == pytest.approx(1.0)
    noisy = spearman_ci([1, 2, 3, 4, 5, 6], [3, 1, 2, 6, 4, 5], n_boot=2000)
    assert noisy.spans(0.0)  # ρ = 0.6 at n = 6 decides nothing
    assert not math.isnan(noisy.value or math.nan)
    assert spearman_ci([1, 2], [1, 2]).value is None


def test_partial_spearman_removes_a_shared_cause_and_keeps_a_direct_link():
    """By construction: x and y both follow z (no link given z) → raw ρ large, partial ρ near 0; y follows x
    and z is unrelated noise → partial ρ stays as large as the raw one."""
    import numpy as np

    g = np.random.default_rng(0)
    z = g.normal(size=200)
    x, y = z + 0.3 * g.normal(size=200), z + 0.3 * g.normal(size=200)
    raw, part = spearman_ci(x, y, n_boot=300), spearman_ci(x, y, zs=z, n_boot=300)
    assert (raw.lo or 0) > 0.7 and part.spans(0.0) and abs(part.value or 1) < 0.15
    y2, z2 = -x + 0.3 * g.normal(size=200), g.normal(size=200)
    raw2, part2 = spearman_ci(x, y2, n_boot=300), spearman_ci(x, y2, zs=z2, n_boot=300)
    assert (part2.hi or 0) < -0.8 and part2.value == pytest.approx(raw2.value, abs=0.05)
