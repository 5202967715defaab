"""Relearning attack on the tiny trained model: deterministic, input untouched, recovery well defined."""

import torch

from circuitforge.cad.controls import suppression_edit
from circuitforge.eval.relearn import RelearnSettings, finetune, relearning_attack


def test_finetune_is_a_deterministic_copy(tiny_facts, forget_task):
    s = RelearnSettings(steps=3, lr=1e-3)
    before = {k: v.clone() for k, v in tiny_facts.state_dict().items()}
    a, b = finetune(tiny_facts, forget_task, s), finetune(tiny_facts, forget_task, s)
    assert all(torch.equal(before[k], v) for k, v in tiny_facts.state_dict().items())
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], before[k]) for k in sa)
    assert not tiny_facts.bridge.training and not a.bridge.training


def test_relearning_attack_reports_rates(tiny_facts, forget_task):
    r = relearning_attack(tiny_facts, suppression_edit(tiny_facts, forget_task), forget_task,
                          RelearnSettings(steps=5, lr=1e-3))
    assert 0 <= r.attacked_accuracy <= 1 and r.base_attacked_accuracy > 0.5
    assert r.recovery_rate == r.attacked_accuracy / r.base_attacked_accuracy
    assert r.before_accuracy < 0.5  # the suppression edit did suppress the held-out half
