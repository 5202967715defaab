"""benchmarks/cad_predictors.py: the within-split ranking and the verdict-group comparisons, on synthetic cells
whose answers are known by construction."""

from pathlib import Path

from _scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load():
    return load_benchmark("cad_predictors")


def _cell(split: str, method: str, e: float, recovery: float, verdict: str) -> dict:
    return {"_bench": "m", "_dir": "d", "split": split, "method": method, "seed": 0,
            "relearn": {"recovery": recovery},
            "scorecard": {"cad": {"erasure_score": e, "verdict": verdict},
                          "properties": {"forgetting": {"value": 0.8}, "ptq_gap": {"value": 0.0}}},
            "correct": {}}


def test_within_split_rho_sees_an_order_the_split_levels_hide():
    m = _load()
    # Within each split a larger E goes with less relearning (rho -1); the splits' levels run the other way
    # (split b: larger E and more relearning throughout), so the pooled rho is positive.
    cells = [_cell("a", f"x{i}", e, r, "indeterminate") for i, (e, r) in enumerate([(0.1, 0.4), (0.2, 0.3), (0.3, 0.2), (0.4, 0.1)])]
    cells += [_cell("b", f"x{i}", e, r, "indeterminate") for i, (e, r) in enumerate([(0.6, 0.9), (0.7, 0.8), (0.8, 0.7), (0.9, 0.6)])]
    row = next(r for r in m.table(cells, n_boot=200) if r["feature"] == "erasure_score")
    assert row["spearman"]["value"] > 0.3
    assert row["within_split_spearman"]["value"] == -1.0
    assert row["within_model_spearman"]["value"] > 0.3     # one model: the same as pooled


def test_by_verdict_compares_each_call_with_the_rest():
    m = _load()
    cells = [_cell("a", "x", 0.0, r, "suppression") for r in (0.9, 0.8, 0.85)]
    cells += [_cell("a", "y", 0.5, r, "erasure") for r in (0.1, 0.2)]
    cells += [_cell("a", "z", 0.2, r, "indeterminate") for r in (0.5, 0.6)]
    bv = m.by_verdict(cells, n_boot=500)
    sup, era = bv["suppression_minus_rest"], bv["erasure_minus_rest"]
    assert abs(sup["value"] - (0.85 - (0.1 + 0.2 + 0.5 + 0.6) / 4)) < 1e-12 and sup["lo"] > 0
    assert abs(era["value"] - (0.15 - (0.9 + 0.8 + 0.85 + 0.5 + 0.6) / 5)) < 1e-12 and era["hi"] < 0
    assert sup["n_suppression"] == 3 and sup["n_rest"] == 4
    t = m.verdict_table({"by_verdict": bv})
    assert [r[0] for r in t["rows"]] == ["erasure", "indeterminate", "suppression"]
    assert t["rows"][1][-1] == "–"                           # no comparison is made for indeterminate


def test_variance_explained_is_the_between_group_share():
    m = _load()
    # groups a (0.2, 0.4) and b (0.6, 0.8): mean 0.5, total SS 0.2, between-group SS 4 * 0.2² = 0.16
    cells = [_cell(s, "x", 0.0, r, "indeterminate") for s, r in (("a", 0.2), ("a", 0.4), ("b", 0.6), ("b", 0.8))]
    assert abs(m.variance_explained(cells, lambda c: c["split"]) - 0.8) < 1e-12
    assert m.variance_explained(cells, lambda c: c["method"]) == 0.0     # one group: nothing between groups
    assert m.variance_explained(cells[:1], lambda c: c["split"]) is None
