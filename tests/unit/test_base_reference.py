"""``BaseReference`` (``Assessment.reference()``, ``verify --base-reference``): an assessment that reads the base model's measurements back
from a file gives the same scorecard and CAD numbers as one that computes them, without evaluating, quantizing
or attributing the base model again; a reference measured on other weights or rows is not used."""

import json

import pytest
import torch

from circuitforge.cad import CADSettings, late_ascent
from circuitforge.errors import CircuitForgeError
from circuitforge.eval import Assessment, BaseReference, assess

SETTINGS = CADSettings(method="eap", n_null=20, n_benign=1, n_benign_finetune=0, hybrid_points=3)


@pytest.fixture(scope="module")
def edited(tiny_facts, forget_task):
    # not a readout-only edit: M₁ with M₀'s readout must differ from M₀ (else it counts as base work)
    # and it must forget enough that relearning recovery is defined (5 steps did not on every machine:
    # the tiny world trains to slightly different weights on different CPUs)
    return late_ascent(tiny_facts, forget_task.head(8), layers=2, max_steps=20)


@pytest.fixture(scope="module")
def cold(tiny_facts, edited, forget_task, retain_task, tmp_path_factory):
    import circuitforge.cad.api as api

    api._BASE_SCORES.clear()
    a = assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS)
    path = tmp_path_factory.mktemp("ref") / "base_reference.json"
    a.reference().to_json(str(path))
    return a, path


def _counting(monkeypatch, tiny_facts):
    """Count base-model evaluations, quantizations and CAD attributions (edited-model calls pass through)."""
    import importlib

    import circuitforge.cad.api as api

    sv = importlib.import_module("circuitforge.quant.survival")

    calls = {"acc": 0, "quant": 0, "attr": 0}
    acc, quant, attr = sv._acc, sv.quantized_accuracy, api.per_example_edge_scores

    def acc_(h, *a, **k):
        calls["acc"] += h.sha256 == tiny_facts.sha256
        return acc(h, *a, **k)

    def quant_(h, *a, **k):
        calls["quant"] += h.sha256 == tiny_facts.sha256
        return quant(h, *a, **k)

    def attr_(h, *a, **k):
        calls["attr"] += h.sha256 == tiny_facts.sha256
        return attr(h, *a, **k)

    monkeypatch.setattr(sv, "_acc", acc_)
    monkeypatch.setattr(sv, "quantized_accuracy", quant_)
    monkeypatch.setattr(api, "per_example_edge_scores", attr_)
    monkeypatch.setattr(api, "_BASE_SCORES", {})
    return calls


def _numbers(a: Assessment) -> dict:
    d = a.scorecard.to_dict()
    return {"props": {k: (p["value"], p.get("ci")) for k, p in d["properties"].items()},
            "acc": d["accuracies"], "cad": (a.cad.value, a.cad.z, a.cad.verdict, a.cad.score),
            "edges": [(e["base"], e["change"]) for e in a.cad.edges]}


def test_reference_from_file_reproduces_the_cold_run_without_base_work(
        cold, tiny_facts, edited, forget_task, retain_task, monkeypatch):
    a0, path = cold
    ref = BaseReference.from_json(str(path))
    assert ref.matches(tiny_facts) and len(ref.cad_scores) == 1
    assert len(ref.cad_scores[0]["scores"]) == 8 and len(ref.cad_scores[0]["edges"]) == len(a0.cad.edges)
    calls = _counting(monkeypatch, tiny_facts)
    a1 = assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS, base_reference=ref)
    assert calls == {"acc": 0, "quant": 0, "attr": 0}
    assert _numbers(a1) == _numbers(a0)


def test_without_reference_the_base_work_is_done(cold, tiny_facts, edited, forget_task, retain_task, monkeypatch):
    calls = _counting(monkeypatch, tiny_facts)
    assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS)
    assert calls == {"acc": 1, "quant": 1, "attr": 1}


def test_reference_of_other_weights_or_rows_is_not_used(cold, tiny_facts, edited, forget_task, retain_task, monkeypatch):
    _, path = cold
    d = json.loads(path.read_text())
    d["base"]["sha256"] = "0" * 64
    stale = BaseReference.from_dict(d)
    assert not stale.matches(tiny_facts)
    calls = _counting(monkeypatch, tiny_facts)
    assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS, base_reference=stale)
    assert calls == {"acc": 1, "quant": 1, "attr": 1}
    # same weights, other CAD rows: the accuracies are reused, the attribution (keyed by rows) is recomputed
    calls = _counting(monkeypatch, tiny_facts)
    assess(tiny_facts, edited, forget_task, retain_task, cad_rows=6, cad_settings=SETTINGS,
           base_reference=BaseReference.from_json(str(path)))
    assert calls == {"acc": 0, "quant": 0, "attr": 1}


def test_bad_files_are_one_line_errors(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json")
    with pytest.raises(CircuitForgeError, match="invalid JSON"):
        BaseReference.from_json(str(p))
    p.write_text(json.dumps({"format": "circuitforge.verify/1"}))
    with pytest.raises(CircuitForgeError, match="not a circuitforge.base_reference/1"):
        BaseReference.from_json(str(p))
    with pytest.raises(CircuitForgeError, match="cannot read"):
        BaseReference.from_json(str(tmp_path / "missing.json"))
    with pytest.raises(CircuitForgeError, match="shape"):
        from circuitforge.cad.api import base_scores_key, remember_base_scores

        remember_base_scores(base_scores_key("a", "b", ["x->y", "y->z"], "eap", 0), torch.zeros(3, 5))


def test_relearning_attack_in_assess_reuses_the_base_curve(cold, tiny_facts, edited, forget_task, retain_task,
                                                          monkeypatch, tmp_path):
    import importlib

    from circuitforge.eval.relearn import RelearnSettings, split_by_fact

    rs = RelearnSettings(budgets=(2, 4), lr=1e-3, batch_size=8)
    a = assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS, relearn=rs)
    rl = a.relearn
    train, held = split_by_fact(forget_task)
    assert rl["held"]["sha256"] == held.sha256 and rl["n_held"] == len(held) and rl["train"]["n"] == len(train)
    assert rl["recovery"] is not None and rl["ci"] is not None and rl["ci"][0] <= rl["recovery"] <= rl["ci"][1]
    assert rl["floor"].startswith("none")
    path = tmp_path / "ref.json"
    a.reference().to_json(str(path))
    ref = BaseReference.from_json(str(path))
    assert ref.relearn_curve(tiny_facts.sha256, train.sha256, held.sha256, rs) is not None
    assert ref.relearn_curve(tiny_facts.sha256, train.sha256, held.sha256, RelearnSettings(budgets=(2, 4))) is None
    calls = []
    mod = importlib.import_module("circuitforge.eval.relearn")
    real = mod.base_curve
    monkeypatch.setattr(mod, "base_curve", lambda *x, **k: calls.append(1) or real(*x, **k))
    again = assess(tiny_facts, edited, forget_task, retain_task, cad_rows=8, cad_settings=SETTINGS,
                   relearn=rs, base_reference=ref)
    assert calls == [] and again.relearn["recovery"] == rl["recovery"]
    assert again.relearn["correct"] == rl["correct"]
