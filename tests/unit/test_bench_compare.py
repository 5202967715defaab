"""benchmarks/bench_compare.py: the same-domain rows left when the forget rows' counterfactual subjects are
dropped, rebuilt from the config and checked against the committed cells."""

import json
from pathlib import Path

import pytest
from _scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load():
    return load_benchmark("bench_compare")


def _cells():
    folder = ROOT / "docs" / "results" / "unlearning" / "cells"
    return {f"split{i}": json.loads((folder / f"mansu-split{i}-seed0.json").read_text()) for i in range(5)}


def test_counterfactual_subjects_are_left_out_of_the_scored_same_domain_rows():
    from circuitforge.eval.bench import BenchConfig, make_splits

    m = _load()
    kept = m.not_counterfactual_rows(str(ROOT / "benchmarks" / "unlearning.toml"), _cells())
    _, splits = make_splits(BenchConfig.from_toml(ROOT / "benchmarks" / "unlearning.toml"))
    dropped = []
    for sp in splits:
        cps = {it.corrupt_prompt for it in sp.forget.items}
        rows = sp.retain_same.items
        assert all(rows[i].prompt not in cps for i in kept[sp.name])
        assert all(rows[i].prompt in cps for i in set(range(len(rows))) - set(kept[sp.name]))
        dropped.append(len(rows) - len(kept[sp.name]))
    assert dropped == [4, 4, 8, 8, 5]          # counted independently when the option was written


def test_a_config_that_does_not_rebuild_the_cells_splits_is_refused(tmp_path):
    m = _load()
    cfg = (ROOT / "benchmarks" / "unlearning.toml").read_text().replace("split_seed = 0", "split_seed = 1")
    (tmp_path / "other.toml").write_text(cfg)
    with pytest.raises(SystemExit, match="does not rebuild"):
        m.not_counterfactual_rows(str(tmp_path / "other.toml"), _cells())
