"""The benchmark summary on hand-made cells (no model): pooled columns, CI-based property calls, the
relearning recovery at the attacker's best budget, and claims (a), (d), (e) follow from the numbers."""

import dataclasses
from types import SimpleNamespace

import pytest

from circuitforge.cad.api import FORMAT as CAD_FORMAT
from circuitforge.eval.bench_summary import markdown, method_columns, summarise

CFG = SimpleNamespace(scheme="nf4", extra_schemes=(), methods=("mansu", "ga"), n_forget=8, n_retain=8,
                      n_retain_same=8, n_splits=2, seeds=(0,), version=9)
ONES, ZEROS = [True] * 8, [False] * 8


def _base() -> dict:
    return {"forget": ONES, "forget_nf4": ONES, "retain": ONES, "retain_same": ONES, "paraphrase": ONES,
            "relearn_held": ONES[:4], "relearn_curve": {"0": ONES[:4], "2": ONES[:4], "4": ONES[:4]}}


def _cell(method, split, *, forget, q, retain=ONES, attacked2=(False,) * 4, attacked4=(True, True, False, False),
          floor4=0.0, cad=1.0, verdict="erasure", cad_format=CAD_FORMAT):
    f = sum(forget) / 8
    return {
        "method": method, "split": split, "seed": 0,
        "correct": {"forget": list(forget), "forget_nf4": list(q), "retain": list(retain),
                    "retain_same": ONES, "paraphrase": ONES[:4] + [False] * 4},
        "relearn": {"correct": {"before": [False] * 4, "attacked": {"2": list(attacked2), "4": list(attacked4)}},
                    "floor_by_budget": {"2": 0.0, "4": floor4}, "recovery": None},
        "scorecard": {"cad": {"value": cad, "z": 5.0, "verdict": verdict, "format": cad_format},
                      "properties": {"forgetting": {"value": 1 - f, "ci": [1 - f, 1 - f], "call": "pass"},
                                     "retain": {"value": 0.0}, "ptq_gap": {"value": 0.0},
                                     "structural_erasure": {"value": 5.0, "verdict": verdict}},
                      "accuracies": {"base_forget": 1.0, "unlearned_forget": f, "unlearned_forget_nf4": sum(q) / 8}},
        "median_binwidth_to_update_ratio": 100.0, "code_flip_rate": 0.1, "changed_share": 0.5, "seconds": 1.0,
    }


def test_columns_and_calls():
    bases = {"split0": _base(), "split1": _base()}
    cells = [_cell("mansu", s, forget=ZEROS, q=ZEROS) for s in bases]
    cols, budget = method_columns(CFG, cells, bases)
    assert (cols["forgetting"].value, cols["forgetting"].lo, cols["forgetting"].hi) == (1.0, 1.0, 1.0)
    assert cols["ptq_gap"].value == 0.0 and cols["retain_drop"].hi == 0.0
    assert cols["paraphrase_acc"].value == 0.5 and cols["paraphrase_drop"].value == 0.5
    # recovery at budget 4: (0.5 − 0 − 0) ÷ (1 − 0) = 0.5 beats budget 2 (0.0): the attacker's best budget
    assert budget == 4 and cols["relearn"].value == pytest.approx(0.5)
    doc = summarise(CFG, cells, bases)
    calls = {p: v["call"] for p, v in doc["table"]["mansu"]["properties"].items()}
    assert calls == {"forgetting": "pass", "retain": "pass", "ptq_gap": "pass", "structural_erasure": "pass"}
    assert doc["claims"]["d"]["holds"] == "holds"


def test_floor_lowers_recovery_and_gap_fails():
    bases = {"split0": _base(), "split1": _base()}
    half = [True] * 4 + [False] * 4
    cells = [_cell("ga", s, forget=ZEROS, q=half, floor4=0.25) for s in bases]
    cols, budget = method_columns(CFG, cells, bases)
    assert cols["relearn"].value == pytest.approx(0.25)  # (0.5 − 0.25) ÷ 1
    assert cols["ptq_gap"].value == 0.5 and cols["ptq_gap"].lo > 0
    assert cols["q_recovery"].value == pytest.approx(0.5)
    doc = summarise(CFG, cells, bases)
    assert doc["table"]["ga"]["properties"]["ptq_gap"]["call"] == "fail"
    assert doc["claims"]["a"]["holds"] == "holds"  # the only gradient baseline's gap CI is above 0


def test_undecided_and_claim_e():
    bases = {f"split{i}": _base() for i in range(6)}
    mixed = [True] * 3 + [False] * 5  # forgetting 0.625 but a retain drop of 1/8 on one split only
    cells = [_cell("mansu", s, forget=mixed, q=mixed, retain=(ONES if i else [False] + ONES[1:]), cad=float(i))
             for i, s in enumerate(bases)]
    doc = summarise(CFG, cells, bases)
    assert doc["table"]["mansu"]["properties"]["retain"]["call"] == "undecided"  # CI [0, ~0.06] spans 0.05
    assert doc["claims"]["d"]["holds"] == "undecided"
    e = doc["claims"]["e"]
    assert e["measured"]["n_runs"] == 6 and e["holds"] in ("undecided", "holds", "does not hold")
    md = markdown({"model": "m", "command": "c", "config": {**CFG.__dict__, "n_retain": 8}, "n_cells": 6,
                   "n_cells_planned": 6, "splits_run": sorted(bases), "cell_seconds": 6.0, "cores": 2,
                   "cells": cells, **doc})
    assert "undecided" in md and "| mansu | 6 |" in md


def _relearn_cell(split, attacked, n=40):
    return {"split": split, "relearn": {"correct": {"before": [False] * n, "attacked": {"4": list(attacked)}},
                                        "floor_by_budget": {"4": 0.0}, "recovery": 0.0}}


def test_relearn_reliability_separates_signal_from_row_noise():
    import numpy as np

    from circuitforge.eval.bench_summary import relearn_reliability

    rng = np.random.default_rng(1)
    bases = {f"s{i}": {"relearn_curve": {"4": [True] * 40}} for i in range(30)}
    # every run the same: recoveries differ only by which held rows happened to come back
    same = [_relearn_cell(f"s{i}", rng.random(40) < 0.5) for i in range(30)]
    r = relearn_reliability(same, bases, n_boot=200)
    assert r["n_runs"] == 30 and abs(r["reliability"]) < 0.6 and r["ceiling"] < 0.8
    # half the runs recover 10%, half 90%: the spread is real
    real = [_relearn_cell(f"s{i}", rng.random(40) < (0.1 if i % 2 else 0.9)) for i in range(30)]
    r = relearn_reliability(real, bases, n_boot=200)
    assert r["reliability"] > 0.9 and r["ceiling"] > 0.95
    # all-or-nothing rows: no sampling noise at all
    r = relearn_reliability([_relearn_cell(f"s{i}", [i % 2 == 0] * 40) for i in range(4)], bases, n_boot=50)
    assert r["mean_sampling_variance"] == 0.0 and r["reliability"] == 1.0


def test_cell_recovery_matches_the_stored_cells():
    """The per-row recomputation equals the recovery each benchmark cell stored (computed by the attack code)."""
    import glob
    import json

    import numpy as np

    from circuitforge.eval.relearn import best_recovery

    files = sorted(glob.glob("docs/results/unlearning/cells/*.json"))
    assert files
    for f in files[:8]:
        c = json.load(open(f))
        base = json.load(open(f"docs/results/unlearning/splits/{c['split']}.json"))["base"]
        r = c["relearn"]
        att = {b: np.asarray(v, float) for b, v in r["correct"]["attacked"].items()}
        got = best_recovery(np.asarray(r["correct"]["before"], float), att,
                            {b: np.asarray(base["relearn_curve"][b], float) for b in att},
                            {b: float(r["floor_by_budget"][b]) for b in att})
        assert got == pytest.approx(r["recovery"], abs=1e-9), f


def test_a_cell_made_under_other_library_defaults_is_recomputed(tmp_path):
    """Cells record the resolved settings (every field, defaults included); a cell whose resolved settings
    differ from today's — a library default changed, the config's overrides did not — is not reused. A
    cell written before they were recorded is reused on its overrides (the committed benchmark's cells)."""
    import json
    from pathlib import Path

    from circuitforge.eval.bench import BenchConfig, _cell_or_none, resolved_settings

    cfg = BenchConfig.from_toml(Path(__file__).parents[1] / "integration" / "bench_tiny.toml")
    (tmp_path / "cells").mkdir()
    now = resolved_settings("mansu", {})
    assert now["step_share"] > 0 and "move_cost" in now
    path = tmp_path / "cells" / "mansu-split0-seed0.json"

    def write(**extra):
        path.write_text(json.dumps({"method": "mansu", "config_version": cfg.version,
                                    "settings": cfg.settings.get("mansu", {}), **extra}))

    overrides = cfg.settings.get("mansu", {})
    write(resolved_settings=resolved_settings("mansu", overrides))
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is not None
    write(resolved_settings={**resolved_settings("mansu", overrides), "kappa": 9.0})   # another default then
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is None
    write()                                                                              # recorded before
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is not None
    # a field added to the settings since (the cell lacks it) is no change at its default, a change when set
    older = {k: v for k, v in resolved_settings("mansu", overrides).items() if k != "forget_positions"}
    write(resolved_settings=older)
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is not None
    cfg.settings["mansu"] = {**overrides, "forget_positions": "subject"}
    write(resolved_settings=older)
    path.write_text(json.dumps({**json.loads(path.read_text()), "settings": cfg.settings["mansu"]}))
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is None


def test_a_sweep_point_made_under_other_library_defaults_is_rerun(tmp_path, tiny_facts):
    """Sweep points follow the cells' rule: a point is reused when its config version, overrides and
    resolved settings match today's, and recomputed when a library default it ran under has changed."""
    import json
    from pathlib import Path

    from circuitforge.data import load_task
    from circuitforge.eval.bench import BenchConfig, make_splits, resolved_settings, run_sweep

    cfg = BenchConfig.from_toml(Path(__file__).parents[1] / "integration" / "bench_tiny.toml")
    cal, _ = make_splits(cfg)
    retain = load_task(cfg.retain).head(cfg.n_retain)

    def reruns() -> list[str]:
        said: list[str] = []
        run_sweep(cfg, tmp_path, tiny_facts, cal, retain, said.append)
        return [m for m in said if m.startswith("sweep ga {")]

    assert len(reruns()) == 2                                   # both grid points computed
    p0 = tmp_path / "sweep" / "ga-0.json"
    rec = json.loads(p0.read_text())
    assert rec["resolved_settings"] == resolved_settings("ga", rec["settings"])
    assert reruns() == []                                       # both reused
    p0.write_text(json.dumps({**rec, "resolved_settings": {**rec["resolved_settings"], "eval_every": 7}}))
    assert reruns() == [f"sweep ga {rec['point']}"]             # made under another default: rerun
    p0.write_text(json.dumps({k: v for k, v in rec.items() if k != "resolved_settings"}))
    assert reruns() == []                                       # recorded before: reused on its overrides


def test_old_format_cad_evidence_is_left_out_and_marked():
    """A cell whose CAD evidence predates the current format neither counts towards the erasure share nor
    decides structural erasure; the per-split table marks it. Fails if the format check is dropped."""
    bases = {"split0": _base(), "split1": _base()}
    cells = [_cell("mansu", s, forget=ZEROS, q=ZEROS, cad_format="circuitforge.cad/3") for s in bases]
    doc = summarise(CFG, cells, bases)
    assert doc["table"]["mansu"]["properties"]["structural_erasure"]["call"] == "undecided"
    md = markdown({"model": "m", "command": "c", "config": {**CFG.__dict__}, "n_cells": 2, "n_cells_planned": 2,
                   "splits_run": sorted(bases), "cell_seconds": 2.0, "cores": 2, "cells": cells, **doc})
    assert "old format cad/3" in md and "2 of 2 cells carry CAD evidence of an older format" in md


def test_methods_are_given_the_split_retain_train_rows_and_cells_record_it(tmp_path):
    """With ``n_retain_same_train`` every method's retain set is the general rows followed by the split's
    ``retain_train`` rows (a new task; the inputs are unchanged); a cell made with another count is not
    reused (another experiment, same config version)."""
    import json
    from pathlib import Path

    from circuitforge.data import load_task
    from circuitforge.data.splits import resample
    from circuitforge.eval.bench import BenchConfig, _cell_or_none, method_retain

    retain = load_task("builtin:retain").head(8)
    _, (plain,) = resample(n_splits=1, n_forget=16, n_retain=16, n_unknown=8, seed=0)
    _, (given,) = resample(n_splits=1, n_forget=16, n_retain=16, n_unknown=8, seed=0, n_retain_train=12)
    assert method_retain(retain, plain) is retain
    both = method_retain(retain, given)
    assert both.items == retain.items + given.retain_train.items and len(both) == 20
    assert len(retain) == 8 and len(given.retain_train) == 12

    cfg = BenchConfig.from_toml(Path(__file__).parents[1] / "integration" / "bench_tiny.toml")
    (tmp_path / "cells").mkdir()
    path = tmp_path / "cells" / "mansu-split0-seed0.json"
    cell = {"method": "mansu", "config_version": cfg.version, "settings": cfg.settings.get("mansu", {}),
            "split_identity": plain.identity()}
    path.write_text(json.dumps(cell))
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is not None
    path.write_text(json.dumps({**cell, "split_identity": given.identity()}))
    assert _cell_or_none(cfg, tmp_path, "mansu", "split0", 0, {}) is None
    cfg12 = dataclasses.replace(cfg, n_retain_same_train=12)
    assert _cell_or_none(cfg12, tmp_path, "mansu", "split0", 0, {}) is not None


def test_run_cell_and_the_sweep_hand_the_methods_the_retain_train_rows(monkeypatch, tmp_path):
    """The cell runner and the sweep pass ``method_retain``'s rows to ``unlearn`` (stopped right there)."""
    from circuitforge import data, surgery
    from circuitforge.data import load_task
    from circuitforge.data.splits import resample
    from circuitforge.eval import bench

    seen = []

    class Stop(Exception):
        pass

    def fake_unlearn(base, forget, retain, **kw):
        seen.append(retain)
        raise Stop

    monkeypatch.setattr(surgery, "unlearn", fake_unlearn)
    monkeypatch.setattr(data, "evaluate", lambda handle, task: SimpleNamespace(accuracy=1.0))  # the sweep's base
    retain = load_task("builtin:retain").head(8)
    cal, (sp,) = resample(n_splits=1, n_forget=16, n_retain=16, n_unknown=8, seed=0, n_retain_train=12)
    cfg = bench.BenchConfig(version=1, model="x", n_retain_same_train=12, sweep={"ga": {"lr": [1e-5]}},
                            methods=("ga",))
    with pytest.raises(Stop):
        bench.run_cell(cfg, "ga", 0, sp, retain, None, {}, {})
    with pytest.raises(Stop):
        bench.run_sweep(cfg, tmp_path, None, cal, retain, lambda s: None)
    assert seen[0].items == retain.items + sp.retain_train.items
    assert seen[1].items == retain.items + cal.retain_train.items and len(cal.retain_train) > 0
