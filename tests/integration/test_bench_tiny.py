"""The reduced benchmark (tiny trained model, 2 resampled splits, 3 methods, a 2-point GA sweep) runs end to
end through ``assess``; every item column carries a 95% CI around its value; the property calls follow
from the CI bounds; claims (a)–(e) are reported; the sweep is recorded; a rerun resumes from the
finished cells, the cached circuits and the cached base outcomes."""

import json
import math
from pathlib import Path

import pytest

from circuitforge.eval.bench import BenchConfig, run_bench
from circuitforge.eval.stats import Estimate, judge

CONFIG = Path(__file__).with_name("bench_tiny.toml")
CI_COLUMNS = ("forget_acc", "forget_q", "forgetting", "retain_drop", "retain_same_drop", "paraphrase_acc",
              "paraphrase_drop", "ptq_gap", "cad_z", "erasure_share")


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    cfg = BenchConfig.from_toml(CONFIG)
    out = tmp_path_factory.mktemp("bench-seq")
    return cfg, out, run_bench(cfg, out)


def _key(c):
    return (c["method"], c["split"], c["seed"])


def test_workers_compute_the_same_cells(sequential, tmp_path):
    """Two worker processes (splits dealt round-robin) give every cell the same edited weights and numbers."""
    cfg, _, res = sequential
    said: list[str] = []
    par = run_bench(cfg, tmp_path, workers=2, progress=said.append)
    assert any(m.startswith("worker 1: split0") for m in said) and any(m.startswith("worker 2: split1") for m in said)
    a, b = {_key(c): c for c in res["cells"]}, {_key(c): c for c in par["cells"]}
    assert set(a) == set(b) and len(a) == len(cfg.cells())
    for k in a:
        sa, sb = a[k]["scorecard"], b[k]["scorecard"]
        assert sa["unlearned"]["sha256"] == sb["unlearned"]["sha256"], k
        assert {n: p["value"] for n, p in sa["properties"].items()} == {n: p["value"] for n, p in sb["properties"].items()}, k
        assert a[k]["relearn"]["recovery"] == b[k]["relearn"]["recovery"] and a[k]["correct"] == b[k]["correct"], k
    assert par["table"].keys() == res["table"].keys()


def test_reduced_benchmark(sequential):
    cfg, tmp_path, res = sequential
    assert len(res["cells"]) == len(cfg.cells()) == len(cfg.methods) * cfg.n_splits
    assert set(res["table"]) == set(cfg.methods)
    for method, row in res["table"].items():
        assert row["n_cells"] == cfg.n_splits and row["splits"] == ["split0", "split1"]
        for k in CI_COLUMNS:
            e = row["columns"][k]
            assert e["value"] is not None and math.isfinite(e["value"]), (method, k)
            assert e["lo"] - 1e-12 <= e["value"] <= e["hi"] + 1e-12, (method, k, e)
            assert e["n_groups"] == cfg.n_splits
        assert row["columns"]["forgetting"]["n"] == cfg.n_splits * cfg.n_forget
        for p in row["properties"].values():  # the call is what the CI bounds say
            want = judge(Estimate(p["value"], p["lo"], p["hi"], p["n"], p["n_groups"]), p["threshold"], p["direction"])
            assert p["call"] == want
    for c in res["cells"]:  # each cell was scored by assess (the verify/1 scorecard)
        assert c["scorecard"]["format"] == "circuitforge.verify/1"
        assert c["scorecard"]["tasks"]["forget"]["sha256"] == c["split_identity"]["forget"]["sha256"]
        assert len(c["correct"]["paraphrase"]) == c["split_identity"]["paraphrase"]["n"]
        assert c["relearn"]["n_held"] + len(c["relearn"]["correct"]["before"]) > 0
    assert set(res["claims"]) == {"a", "b", "c", "d", "e", "verdict_score"}
    assert all(cl["holds"] in ("holds", "does not hold", "undecided", None) for cl in res["claims"].values())
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    assert len(sweep["methods"]["ga"]["points"]) == 2 and sweep["methods"]["ga"]["chosen"]["lr"] in cfg.sweep["ga"]["lr"]
    assert all(c["settings"]["lr"] == sweep["methods"]["ga"]["chosen"]["lr"] for c in res["cells"] if c["method"] == "ga")
    md = (tmp_path / "results.md").read_text()
    assert "same-domain retain drop" in md and "targeted paraphrase acc" in md
    assert "| mansu |" in md and "paper's claims" in md and "sweep on the calibration split" in md
    assert json.loads((tmp_path / "results.json").read_text())["format"] == "circuitforge.bench/2"
    assert sorted(p.name for p in (tmp_path / "circuits").iterdir()) == ["split0.json", "split1.json"]

    # a cell that is not the last one in order: the summary written at the end must still hold every cell
    (tmp_path / "cells" / "ga-split0-seed0.json").unlink()
    said: list[str] = []
    again = run_bench(cfg, tmp_path, progress=said.append)  # resumable: cells, circuits, sweep, base reused
    assert len(again["cells"]) == len(cfg.cells())
    assert json.loads((tmp_path / "results.json").read_text())["n_cells"] == len(cfg.cells())
    assert [c["seconds"] for c in again["cells"] if c["method"] != "ga" or c["split"] != "split0"] == \
        [c["seconds"] for c in res["cells"] if c["method"] != "ga" or c["split"] != "split0"]
    assert sum("done earlier, reused" in m for m in said) == len(cfg.cells()) - 1
    # the recomputed cell is bit-identical in its weights (same seed, same split): sha256 of the edited model
    first = next(c for c in res["cells"] if c["method"] == "ga" and c["split"] == "split0")
    redo = next(c for c in again["cells"] if c["method"] == "ga" and c["split"] == "split0")
    assert redo["scorecard"]["unlearned"]["sha256"] == first["scorecard"]["unlearned"]["sha256"]
    assert redo["scorecard"]["unlearned"]["sha256"] != redo["scorecard"]["base"]["sha256"]
    assert any("split0: reused circuit" in m for m in said), said
    assert not any("sweep ga {" in m or "finding the base forget circuit" in m or "base-model outcomes" in m
                   for m in said), said


def test_cells_with_old_cad_evidence_are_refreshed(sequential, tmp_path):
    """A cell whose CAD evidence has an older format is marked in the summary (and left out of the CAD
    statistics) until the next run refreshes it: the method is rerun, the rebuilt weights match, only CAD is
    measured again, and the result equals what ``assess`` measured for the cell in the first place; a cell
    whose weights no longer rebuild is rerun whole."""
    import shutil

    cfg, out, res = sequential
    work = tmp_path / "bench"
    shutil.copytree(out, work)
    old_path, bad_path = work / "cells" / "ga-split0-seed0.json", work / "cells" / "mansu-split1-seed0.json"
    original = json.loads(old_path.read_text())
    old = json.loads(old_path.read_text())
    del old["scorecard"]["cad"]["format"]            # as written before the summary recorded its format
    old["scorecard"]["cad"]["verdict"] = "unchanged"
    old_path.write_text(json.dumps(old))
    bad = json.loads(bad_path.read_text())
    del bad["scorecard"]["cad"]["format"]
    bad["edited"]["sha256"] = "0" * 64                # weights that no longer rebuild
    bad_path.write_text(json.dumps(bad))

    held = run_bench(cfg, work, max_cells=0)          # nothing computed: the stale cells are only marked
    md = (work / "results.md").read_text()
    assert "2 of 4 cells carry CAD evidence of an older format" in md and "unchanged (old format cad/3 or earlier)" in md
    assert held["table"]["ga"]["columns"]["erasure_share"]["n_groups"] == 1   # only ga's current cell counts

    said: list[str] = []
    interim: list[int] = []   # cells in results.json, read at each progress line once a refresh was written

    def progress(m: str) -> None:
        said.append(m)
        if any("CAD" in x and "→" in x for x in said):
            interim.append(json.loads((work / "results.json").read_text())["n_cells"])

    again = run_bench(cfg, work, progress=progress)
    # the summary written mid-run holds every finished cell, not only those the loop has reached
    assert interim and set(interim) == {len(cfg.cells())}, interim
    assert any("ga split0 seed 0: refreshing its CAD evidence" in m for m in said), said
    assert any("mansu split1 seed 0: the rebuilt weights differ from the cell's; rerunning it" in m for m in said)
    fresh = json.loads(old_path.read_text())
    assert fresh["scorecard"]["cad"] == original["scorecard"]["cad"]         # CAD re-measured, same evidence
    assert fresh["scorecard"]["properties"] == original["scorecard"]["properties"]
    assert fresh["correct"] == original["correct"] and fresh["relearn"] == original["relearn"]
    assert fresh["cad_refreshed"]["verdict_before"] == "unchanged"
    assert "cad_refreshed" not in json.loads(bad_path.read_text())          # rerun whole, as a new cell
    assert f"{original['scorecard']['cad']['verdict']} (was unchanged)" in (work / "results.md").read_text()
    assert again["table"]["ga"]["columns"]["erasure_share"]["n_groups"] == cfg.n_splits
