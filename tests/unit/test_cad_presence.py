"""Answer presence Π (``circuitforge.cad.presence``) on the tiny trained model, and the verdict rules that
read it. Forget = elements rows 0–15; the lens is fitted on M₀ over the same-domain rows 32–47 and the
other-domain retain rows (never the forget rows). Each model test can fail: the subject erasure and the
mid-depth gate are built by editing weights, and nothing forces their Π to either side."""

import pytest
import torch

from circuitforge.cad import block_ascent, early_ascent, subject_erasure, suppression_edit
from circuitforge.cad.presence import fit_base_lens, lens_margins, presence, presence_score
from circuitforge.cad.verdict import E_MIN, KEEP, PI_MAX, decide
from circuitforge.errors import CircuitForgeError


@pytest.fixture(scope="module")
def rows(forget_task, retain_task):
    return forget_task.head(16), [forget_task.subset(range(32, 48), "elements[32:48]"), retain_task]


@pytest.fixture(scope="module")
def lens(tiny_facts, rows):
    return fit_base_lens(tiny_facts, rows[1])


def test_lens_reads_m0s_final_answer_at_the_last_block_input(tiny_facts, lens, rows):
    """Ground truth for the lens: at the input of the last block its reading of M₀'s forget answers is a
    large share of M₀'s own final margin (the forget rows were not in the fit), and it grows with depth
    from nothing at the embedding."""
    a0 = lens_margins(tiny_facts, lens, tiny_facts, rows[0])
    share = a0.sum(1) / a0[-1].sum()
    assert float(share[-2]) > 0.5, share
    assert float(share[0]) < float(share[-2]), share


def test_first_block_ascent_removes_the_answer_from_the_residual(tiny_facts, lens, rows, forget_task):
    """Ascent on block 0 only (the validation's early-ascent erasure control): most of what M₀ writes at the
    interior layers is gone from M₁'s residual. Measured 0.09 [0.02, 0.19] on the validation's lens; on the tiny
    world as trained on another machine (the worlds differ by machine, docs/cad-validation.md) the same control
    reads 0.25 with its CI reaching 0.365, just above PI_MAX (0.36), so the verdict-level claim (CI below
    PI_MAX) depends on the trained world; what holds on both is the CI below 0.5 (the mid-depth gate's lies
    above PI_MAX, the readout edit's is 1)."""
    keep = forget_task.subset(range(16, 32), "elements[16:32]")
    m = early_ascent(tiny_facts, rows[0], 1, lr=5e-4, max_steps=300, retain=keep)
    p = presence(tiny_facts, m, rows[0], lens, n_boot=400)
    assert p["presence_ci"][1] < 0.5, p


def test_subject_erasure_leaves_no_subject_specific_reading(tiny_facts, lens, rows):
    """Every forget subject's embedding replaced by one vector: the rows' residuals no longer differ by
    subject, so the subject-specific reading is 0 at every layer past the embedding."""
    p = presence(tiny_facts, subject_erasure(tiny_facts, rows[0]), rows[0], lens, n_boot=400)
    assert p["presence"] == pytest.approx(0.0, abs=0.05), p


def test_the_specific_reading_removes_the_domain_prior(tiny_facts, lens, rows):
    """Without the contrast, M₀'s own reading includes what its lens gives the same options on other rows'
    residuals (the answer prior); with it, only the row's own part: m[i, i] − mean_{j≠i} m[j, i]."""
    from circuitforge.cad.presence import _specific

    m = torch.tensor([[3.0, 1.0, 0.0], [1.0, 5.0, 0.0], [1.0, 1.0, 2.0]])   # [resid j, row i]
    assert _specific(m).tolist() == [2.0, 4.0, 2.0]
    raw = lens_margins(tiny_facts, lens, tiny_facts, rows[0], specific=False)
    spec = lens_margins(tiny_facts, lens, tiny_facts, rows[0])
    assert raw.shape == spec.shape == (tiny_facts.n_layers + 1, len(rows[0]))
    assert not torch.allclose(raw, spec)


def test_a_gate_after_the_answer_is_written_keeps_it_present(tiny_facts, lens, rows, forget_task):
    """Ascent on block n/2 only: blocks below are M₀'s, so what M₀ writes there is still written; the
    block's own output changes, so Π is not 1 by construction."""
    keep = forget_task.subset(range(16, 32), "elements[16:32]")
    m = block_ascent(tiny_facts, rows[0], [tiny_facts.n_layers // 2], lr=5e-4, max_steps=300, retain=keep, tag="mid-ascent")
    p = presence(tiny_facts, m, rows[0], lens, n_boot=400)
    assert p["presence_ci"][0] >= PI_MAX, p
    assert p["presence"] < 0.99, p
    # the interior layers Π reads (L ≥ 1; P_0 is the embedding, where M₀'s specific reading can be exactly 0 and
    # P_0 is then reported as 0) up to the edited block are M₀'s own residual
    assert all(abs(x - 1) < 1e-4 for x in p["per_layer"][1: tiny_facts.n_layers // 2 + 1]), p["per_layer"]


def test_readout_edit_leaves_every_interior_layer_present(tiny_facts, lens, rows):
    """A plumbing check, 1 by construction: the edit is M₁'s unembedding only, and the lens reads M₁'s
    residual through M₀'s readout, so every interior P_L must come out exactly 1."""
    p = presence(tiny_facts, suppression_edit(tiny_facts, rows[0]), rows[0], lens, n_boot=400)
    assert p["presence"] == pytest.approx(1.0) and p["presence_ci"][0] >= PI_MAX, p


def test_presence_score_by_hand():
    """Two interior layers with M₀ shares 0.5 and 1.0 (of a final margin 2), M₁ keeping all of the first
    and a quarter of the second: Π = (0.5·1 + 1·0.25) / 1.5 = 0.5; P_L clipped to [0, 1] in Π only."""
    a0 = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0], [1.0, 1.0]])   # [n+1 = 4 layers, 2 rows]; row n: M₀'s margin
    a1 = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.25, 0.25], [0.0, 0.0]])
    a0[-1] = torch.tensor([1.0, 1.0])   # final margin sum 2
    pi, p, w = presence_score(a0, a1)
    assert w[1:3] == [0.5, 1.0]
    assert p[1:3] == [1.0, 0.25]
    assert pi == pytest.approx(0.5)
    a1[1] = torch.tensor([2.0, 2.0])    # M₁ writes more than M₀: P_1 = 4, clipped to 1 in Π
    assert presence_score(a0, a1)[0] == pytest.approx(0.5)


def test_lens_needs_rows(tiny_facts, forget_task):
    with pytest.raises(CircuitForgeError):
        fit_base_lens(tiny_facts, [])


def _decide(e_ci, p_ci):
    return decide(0.0, [-0.1, 0.1], 1.0, sum(e_ci) / 2, e_ci, 1.0, None if p_ci is None else sum(p_ci) / 2, p_ci)


def test_verdict_rules_that_read_presence():
    assert KEEP > 0.1 and 0 < E_MIN < 0.8 and 0 < PI_MAX < 0.9
    hi_e, lo_e = [E_MIN + 0.1, E_MIN + 0.2], [E_MIN - 0.2, E_MIN - 0.1]
    present, absent, straddle = [PI_MAX + 0.01, PI_MAX + 0.2], [0.0, PI_MAX - 0.01], [PI_MAX - 0.1, PI_MAX + 0.1]
    assert _decide(hi_e, present).verdict == "suppression"          # rule 3 overrides a high E
    assert _decide(hi_e, absent).verdict == "erasure"
    assert _decide(hi_e, straddle).verdict == "indeterminate"
    assert _decide(hi_e, None).verdict == "erasure"                 # not measured: E alone
    assert _decide(hi_e, [float("nan"), float("nan")]).verdict == "erasure"
    assert _decide(lo_e, absent).verdict == "suppression"           # rule 5 unchanged
    assert decide(0.0, [-0.1, 0.1], 0.0, 0.9, hi_e, 1.0, 0.9, present).verdict == "indeterminate"   # basis first
