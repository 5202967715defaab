"""CAD math on score vectors, and the ground-truth control edits on the tiny trained model."""

import pytest
import torch

from circuitforge.cad.controls import erasure_edit, suppression_edit, unchanged_copy, with_base_readout
from circuitforge.cad.divergence import cad_value, calibrated_cad
from circuitforge.data import evaluate
from circuitforge.models import component_params


def test_cad_value_definition():
    a0 = torch.tensor([1.0, -2.0, 1.0])
    assert cad_value(a0, a0) == 0.0
    assert cad_value(a0, torch.zeros(3)) == pytest.approx(1.0)
    assert cad_value(a0, -a0) == pytest.approx(2.0)
    assert cad_value(a0, torch.tensor([1.0, -1.0, 1.0])) == pytest.approx(0.25)


def test_null_separates_a_real_change_from_noise():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 30, generator=g)
    s0 = base + 0.3 * torch.randn(40, 30, generator=g)
    same = base + 0.3 * torch.randn(40, 30, generator=g)
    gone = 0.1 * base + 0.3 * torch.randn(40, 30, generator=g)
    r_same, r_gone = calibrated_cad(s0, same, n_null=100), calibrated_cad(s0, gone, n_null=100)
    assert abs(r_same.z) < 3 and r_gone.z > 10
    assert r_gone.full == pytest.approx(cad_value(s0.mean(0), gone.mean(0)))
    with pytest.raises(Exception, match="shape|edges"):  # jaxtyping's shape check or our ValueError
        calibrated_cad(s0, s0[:, :3])


def test_suppression_touches_only_the_readout(tiny_facts, forget_task, retain_task):
    s = suppression_edit(tiny_facts, forget_task)
    base_p, new_p = tiny_facts.state_dict(), s.state_dict()
    assert set(base_p) == set(new_p)
    changed = [n for n in new_p if not torch.equal(new_p[n], base_p[n])]
    assert changed == ["lm_head.weight"]  # untied from the embedding, which is unchanged
    assert evaluate(s, forget_task).accuracy <= 0.4 and evaluate(s, retain_task).accuracy >= 0.95
    assert evaluate(tiny_facts, forget_task).accuracy == 1.0  # input untouched
    hybrid = with_base_readout(s, tiny_facts)
    toks = tiny_facts.to_tokens([it.prompt for it in forget_task.items[:4]])
    with torch.no_grad():
        assert torch.equal(hybrid.logits(toks), tiny_facts.logits(toks))


def test_erasure_zeroes_only_the_named_upstream_components(tiny_facts):
    e = erasure_edit(tiny_facts, ["a0.h1", "a1.kv0", "m1", "m3"], upstream_of_layer=3)
    assert all((s.view == 0).all() for n in ("a0.h1", "a1.kv0", "m1") for s in component_params(e, n))
    assert all((s.view != 0).any() for s in component_params(e, "m3"))
    assert all((s.view != 0).any() for s in component_params(tiny_facts, "m1"))


def test_unchanged_copy_has_same_identity(tiny_facts):
    assert unchanged_copy(tiny_facts).sha256 == tiny_facts.sha256


def test_base_edge_scores_are_memoised_by_weights_rows_and_edges(tiny_facts, forget_task, monkeypatch):
    """The base attribution is computed once per (weights, rows, edges, settings), and equals a fresh run."""
    from circuitforge.cad import api

    calls = []
    real = api.per_example_edge_scores
    monkeypatch.setattr(api, "per_example_edge_scores", lambda *a: calls.append(a[1].name) or real(*a))
    monkeypatch.setattr(api, "_BASE_SCORES", {})
    s = api.CADSettings(method="eap", n_null=10)
    task = forget_task.head(4)
    edges = ["input->a0.h0<q>", "m1->logits"]
    first = api.base_edge_scores(tiny_facts, task, edges, s)
    first[0, 0] = 1e9   # the caller's copy: editing it must not reach the memo
    again = api.base_edge_scores(tiny_facts, task, edges, s)
    assert len(calls) == 1 and torch.equal(again, real(tiny_facts, task, edges, s))
    api.base_edge_scores(tiny_facts, forget_task.subset(range(4, 8)), edges, s)   # other rows: recomputed
    api.base_edge_scores(tiny_facts, task, edges[:1], s)                           # other edges: recomputed
    assert len(calls) == 3
