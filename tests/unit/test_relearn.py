"""Relearning attack on the tiny trained model: deterministic, input untouched, one run scored at every
budget, recovery = (attacked − before − floor) ÷ (base attacked − before), undefined when nothing was
forgotten (a method that never forgot must not score 1.0)."""

import pytest
import torch

from circuitforge.cad.controls import suppression_edit
from circuitforge.data import evaluate
from circuitforge.eval.relearn import (
    RelearnSettings,
    attack_curve,
    base_curve,
    finetune,
    recovery,
    relearning_attack,
)


def _acc(xs):
    return sum(xs) / len(xs)


def test_recovery_formula():
    assert recovery(0.2, 0.6, 1.0) == pytest.approx(0.5)
    assert recovery(0.2, 0.6, 1.0, floor=0.1) == pytest.approx(0.375)
    assert recovery(1.0, 1.0, 1.0) is None  # nothing forgotten: no recovery to speak of
    assert recovery(0.5, 0.4, 0.5) is None


def test_settings_validate():
    with pytest.raises(ValueError):
        RelearnSettings(budgets=(10, 5))
    with pytest.raises(ValueError):
        RelearnSettings(budgets=())
    assert RelearnSettings(budgets=(2, 4, 8)).steps == 8


def test_finetune_is_a_deterministic_copy(tiny_facts, forget_task):
    s = RelearnSettings(budgets=(3,), lr=1e-3)
    before = {k: v.clone() for k, v in tiny_facts.state_dict().items()}
    a, b = finetune(tiny_facts, forget_task, s), finetune(tiny_facts, forget_task, s)
    assert all(torch.equal(before[k], v) for k, v in tiny_facts.state_dict().items())
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], before[k]) for k in sa)
    assert not tiny_facts.bridge.training and not a.bridge.training


def test_attack_curve_matches_separate_finetunes(tiny_facts, forget_task):
    train, held = forget_task.halves()
    s = RelearnSettings(budgets=(2, 4), lr=1e-3)
    edited = suppression_edit(tiny_facts, forget_task)
    curve = attack_curve(edited, train, {"held": held}, s)
    assert set(curve) == {0, 2, 4}
    assert curve[0]["held"] == evaluate(edited, held).correct
    # budget 4 of one run equals a separate 4-step fine-tune (same seed, same row order)
    assert curve[4]["held"] == evaluate(finetune(edited, train, RelearnSettings(budgets=(4,), lr=1e-3)), held).correct


def test_relearning_attack_reports_floored_best_recovery(tiny_facts, forget_task, retain_task):
    train, held = forget_task.halves()
    s = RelearnSettings(budgets=(2, 5), lr=1e-3)
    edited = suppression_edit(tiny_facts, forget_task)
    unknown = retain_task.head(16)  # stands in for never-known rows: only the arithmetic is checked here
    shared = base_curve(tiny_facts, train, held, s)
    r = relearning_attack(tiny_facts, edited, train, held, s, unknown=unknown)
    r2 = relearning_attack(None, edited, train, held, s, unknown=unknown, base_attacked=shared)
    assert r.recovery_by_budget == r2.recovery_by_budget  # the shared base curve is the same curve
    assert r.before_accuracy < 0.5  # the suppression edit did suppress the held-out half
    assert _acc(r.base_attacked[5]) > 0.5
    for b in s.budgets:
        want = (_acc(r.attacked[b]) - r.before_accuracy - (_acc(r.unknown_attacked[b]) - _acc(r.unknown_before))) \
            / (_acc(r.base_attacked[b]) - r.before_accuracy)
        assert r.recovery_by_budget[b] == pytest.approx(want)
    assert r.recovery == max(v for v in r.recovery_by_budget.values() if v is not None)
    d = r.to_dict()
    assert d["best_budget"] in (2, 5) and len(d["correct"]["before"]) == len(held)


def test_unedited_model_has_no_recovery(tiny_facts, forget_task):
    train, held = forget_task.halves()
    r = relearning_attack(tiny_facts, tiny_facts, train, held, RelearnSettings(budgets=(2,), lr=1e-3))
    assert r.before_accuracy == 1.0 and r.recovery is None and r.best_budget is None


def test_split_by_fact_keeps_reversals_and_shared_answers_together():
    from circuitforge.data import task_from_rows
    from circuitforge.errors import CircuitForgeError
    from circuitforge.eval.relearn import split_by_fact

    rows = [
        {"prompt": "The chemical symbol for gold is", "answer": " Au", "distractors": [" Ag"]},
        {"prompt": "The element with the chemical symbol Au is", "answer": " gold", "distractors": [" silver"]},
        {"prompt": "The chemical symbol for iron is", "answer": " Fe", "distractors": [" Au"]},
        {"prompt": "Iron is written as", "answer": " Fe", "distractors": [" Ag"]},
        {"prompt": "The chemical symbol for neon is", "answer": " Ne", "distractors": [" Na"]},
        {"prompt": "The chemical symbol for argon is", "answer": " Ar", "distractors": [" Ne"]},
    ]
    train, held = split_by_fact(task_from_rows(rows, "t"))
    sides = {it.prompt: "train" for it in train.items} | {it.prompt: "held" for it in held.items}
    assert len(sides) == 6 and len(train) + len(held) == 6 and len(held) >= 2
    assert sides[rows[0]["prompt"]] == sides[rows[1]["prompt"]]   # symbol ↔ element reversal
    assert sides[rows[2]["prompt"]] == sides[rows[3]["prompt"]]   # same answer
    one = [{"prompt": "The chemical symbol for gold is", "answer": " Au", "distractors": [" Ag"]},
           {"prompt": "Au stands for", "answer": " gold", "distractors": [" silver"]}]
    with pytest.raises(CircuitForgeError, match="no held-out facts"):
        split_by_fact(task_from_rows(one, "one"))
