"""benchmarks/bench_table.py reads each run's pooled columns from its results.json (no recomputation)."""

import json
from pathlib import Path

import pytest
from _scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def _load():
    return load_benchmark("bench_table")


def test_rows_are_the_committed_pooled_columns():
    m = _load()
    folder = ROOT / "docs" / "results" / "unlearning"
    t = m.table([("a", folder, "mansu"), ("b", folder, "graddiff")])
    d = json.loads((folder / "results.json").read_text())
    col = t["columns"].index("same-domain drop")
    for row, method in zip(t["rows"], ("mansu", "graddiff"), strict=True):
        v = d["table"][method]["columns"]["retain_same_drop"]["value"]
        assert row[col].startswith(f"{v:.3g} [") and row[1] == d["table"][method]["n_cells"] and row[2] == 0


def test_bad_rows_are_refused_in_one_line(tmp_path):
    m = _load()
    with pytest.raises(SystemExit, match="label=FOLDER:METHOD"):
        m.parse_row("no-equals-sign")
    with pytest.raises(SystemExit, match="no results"):
        m.table([("x", tmp_path, "mansu")])
    with pytest.raises(SystemExit, match="no rmu2 cells"):
        m.table([("x", ROOT / "docs" / "results" / "unlearning", "rmu2")])
