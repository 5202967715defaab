"""The reduced benchmark (tiny trained model, 1 seed) runs end to end, its table has every method and
column, every number is finite, and a rerun resumes from the finished cells."""

import json
import math
from pathlib import Path

from circuitforge.eval.bench import COLUMNS, BenchConfig, run_bench

CONFIG = Path(__file__).with_name("bench_tiny.toml")


def test_reduced_benchmark(tmp_path):
    cfg = BenchConfig.from_toml(CONFIG)
    res = run_bench(cfg, tmp_path)
    assert set(res["table"]) == set(cfg.methods)
    for method, row in res["table"].items():
        for name, _ in COLUMNS:
            mean, sd = row["columns"][name]
            if name == "recovery NF4" and mean is None:  # undefined when an edit forgot nothing (documented)
                continue
            assert mean is not None and math.isfinite(mean) and math.isfinite(sd), (method, name)
        assert set(row["properties"]) == {"forgetting", "retain", "ptq_gap", "structural_erasure"}
    assert set(res["claims"]) >= {"a", "b", "c", "d", "e"}
    md = (tmp_path / "results.md").read_text()
    assert "| mansu |" in md and "paper's claims" in md
    assert json.loads((tmp_path / "results.json").read_text())["format"] == "circuitforge.bench/1"
    assert (tmp_path / "base_circuit.json").exists()
    (tmp_path / "cells" / "ga-seed0.json").unlink()
    said: list[str] = []
    again = run_bench(cfg, tmp_path, progress=said.append)  # resumable: finished cells and the circuit reused
    assert [c["seconds"] for c in again["cells"] if c["method"] != "ga"] == \
        [c["seconds"] for c in res["cells"] if c["method"] != "ga"]
    assert any("reused base_circuit.json" in m for m in said), said
    assert not any("finding the base forget circuit" in m for m in said)
    assert sum("done earlier, reused" in m for m in said) == len(cfg.methods) - 1
