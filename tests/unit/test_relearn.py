"""Relearning attack on the tiny trained model: deterministic, input untouched, one run scored at every
budget, recovery = (attacked − before − floor) ÷ (base attacked − before), undefined when nothing was
forgotten (a method that never forgot must not score 1.0)."""

import pytest
import torch

from circuitforge.cad.controls import suppression_edit
from circuitforge.data import evaluate
from circuitforge.eval.relearn import (
    RelearnSettings,
    answer_nll,
    attack_curve,
    base_curve,
    finetune,
    recovery,
    relearning_attack,
)
from circuitforge.models.hf import adam


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


def _full_logits_nll(handle, task, rows):
    """The reference: every position unembedded, the answer tokens read from the full log-softmax."""
    from circuitforge.data.scoring import encode, pad_batch

    enc = [encode(handle, task.items[i].prompt, task.items[i].answer) for i in rows]
    logp = torch.log_softmax(handle.logits(pad_batch([e[0] for e in enc])), dim=-1)
    lps = [logp[r, n - 1 + t, tok] for r, (ids, n) in enumerate(enc) for t, tok in enumerate(ids[n:])]
    return -torch.stack(lps).mean()


def test_answer_nll_reads_only_answer_positions_with_full_logit_values(tiny_facts, uneven_task):
    rows = list(range(6))
    flags = {k: p.requires_grad for k, p in tiny_facts.named_parameters().items()}
    for p in tiny_facts.named_parameters().values():
        p.requires_grad_(True)
    try:
        fast, ref = answer_nll(tiny_facts, uneven_task, rows), _full_logits_nll(tiny_facts, uneven_task, rows)
        assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
        params = list(tiny_facts.named_parameters().values())
        g_fast = torch.autograd.grad(fast, params, allow_unused=True)
        g_ref = torch.autograd.grad(ref, params, allow_unused=True)
        for a, b in zip(g_fast, g_ref, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    finally:
        for k, p in tiny_facts.named_parameters().items():
            p.requires_grad_(flags[k])


def test_fused_adam_takes_the_per_tensor_loops_step():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(50, 7)), torch.nn.Parameter(torch.randn(13))]
    b = [torch.nn.Parameter(x.detach().clone()) for x in a]
    init = [x.detach().clone() for x in a]
    fast, loop = adam(a, 1e-2), torch.optim.Adam(b, lr=1e-2, foreach=False)
    assert fast.defaults["fused"]
    for _ in range(3):
        for ps, opt in ((a, fast), (b, loop)):
            opt.zero_grad()
            sum((p**3).sum() for p in ps).backward()
            opt.step()
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b, strict=True))
    assert not any(torch.allclose(x, y) for x, y in zip(a, init, strict=True))   # the steps moved the weights


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
