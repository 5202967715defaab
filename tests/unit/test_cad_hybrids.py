"""Layer hybrids against hand-built hybrids (M₁'s weights copied into M₀), recovery statistics, and the
matched benign null, on the tiny trained model."""

import pytest
import torch

import circuitforge.cad.benign as benign
from circuitforge.cad.benign import distinct_positions, edit_stats, matched_random_sign, percentile
from circuitforge.cad.controls import untie_unembedding
from circuitforge.cad.hybrids import hybrid_layers, hybrid_margins, margin_batch, margins
from circuitforge.cad.recovery import erasure_score, recovery
from circuitforge.models import clone


@pytest.fixture(scope="module")
def perturbed(tiny_facts):
    """M₀ with every parameter perturbed (so every layer, the embedding and the readout differ)."""
    m = clone(tiny_facts, spec="tiny-facts+noise")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.hf.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=g))
    return m


def _hand_built(base, edited, L):
    """M₀ with M₁'s embedding and blocks < L copied in (M₀'s own readout, untied)."""
    h = clone(base)
    untie_unembedding(h)
    with torch.no_grad():
        h.hf.model.embed_tokens.weight.copy_(edited.hf.model.embed_tokens.weight)
        for layer in range(L):
            dst = dict(h.hf.model.layers[layer].named_parameters())
            for n, p in edited.hf.model.layers[layer].named_parameters():
                dst[n].copy_(p)
    return h


def test_hooked_hybrids_equal_weight_copied_hybrids(tiny_facts, perturbed, forget_task):
    task = forget_task.head(8)
    hm = hybrid_margins(tiny_facts, perturbed, task)
    mb = margin_batch(tiny_facts, task)
    assert hm.layers == list(range(tiny_facts.n_layers + 1))
    with torch.no_grad():
        for L in hm.layers:
            ref = margins(_hand_built(tiny_facts, perturbed, L).bridge(mb.tokens), mb)
            torch.testing.assert_close(hm.hybrid[L], ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(hm.own, margins(perturbed.bridge(mb.tokens), mb))
        torch.testing.assert_close(hm.base, margins(tiny_facts.bridge(mb.tokens), mb))
    # the perturbation matters: the full hybrid is not M₀ (a test of a no-op would pass trivially)
    assert (hm.hybrid[-1] - hm.base).abs().max() > 0.05


def test_resumed_hybrids_equal_hooked_hybrids(tiny_facts, perturbed, forget_task):
    """The fast path (M₀'s blocks ≥ L only) against the hooked full-depth path, on a Llama model."""
    from circuitforge.cad.hybrids import base_margins, resumable

    task = forget_task.head(8)
    assert resumable(tiny_facts)
    fast = hybrid_margins(tiny_facts, perturbed, task, base_margins=base_margins(tiny_facts, task))
    hooked = hybrid_margins(tiny_facts, perturbed, task, resume=False)
    torch.testing.assert_close(fast.hybrid, hooked.hybrid, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast.base, hooked.base)
    assert (fast.hybrid[0] - fast.hybrid[-1]).abs().max() > 0.05   # the layers differ: not one repeated row


def test_identical_model_recovers_exactly_and_inputs_untouched(tiny_facts, forget_task):
    sha = tiny_facts.sha256
    same = clone(tiny_facts)
    hm = hybrid_margins(tiny_facts, same, forget_task.head(8), layers=[0, 2, 4])
    assert hm.layers == [0, 2, 4]
    assert torch.equal(hm.hybrid, hm.base.expand(3, -1)) and torch.equal(hm.own, hm.base)
    rec = recovery(hm, hm, n_boot=100)
    assert rec.erasure_score == 0.0 and rec.basis == 1.0 and rec.forget["own"] == pytest.approx(1.0)
    tiny_facts.invalidate_identity()
    assert tiny_facts.sha256 == sha


def test_hybrid_layers_and_erasure_score_by_hand():
    assert hybrid_layers(30, 16) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]
    assert hybrid_layers(4, 16) == [0, 1, 2, 3, 4]
    rf = torch.tensor([1.0, 1.0, 0.0, -0.5, 0.2])   # L = 0..4
    rr = torch.tensor([1.0, 0.9, 1.2, 0.8, 1.0])
    e, b = erasure_score(rf, rr, [0, 1, 2, 3, 4])
    # interior layers 1..3 (L = n = 4 is M₁'s behaviour, left out): clip(rr) = .9 1 .8, clip(rf) = 1 0 0
    # → differences −.1 1 .8 → mean .5667
    assert e == pytest.approx(1.7 / 3)
    assert b == pytest.approx((1.0 + 0.9 + 1.0) / 3)   # L ≤ 2
    # a last-block-only change (every interior hybrid recovers) scores 0 however low R_n is
    assert erasure_score(torch.tensor([1.0, 1.0, 1.0, 1.0, -0.3]), None, [0, 1, 2, 3, 4])[0] == 0.0
    # no interior hybrid layer ([0, n]): falls back to L = n
    assert erasure_score(torch.tensor([1.0, 0.25]), None, [0, 2])[0] == pytest.approx(0.75)


def test_matched_random_sign_matches_norm_and_count(tiny_facts, perturbed):
    # a sparse edit: only one MLP's down projection, half its entries
    sparse = clone(tiny_facts)
    w = sparse.hf.model.layers[1].mlp.down_proj.weight
    with torch.no_grad():
        mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(0)) < 0.5
        w.add_(0.05 * mask)
    sparse.invalidate_identity()
    want = edit_stats(tiny_facts, sparse)
    assert want["changed"] == int(mask.sum())
    b = matched_random_sign(tiny_facts, sparse, seed=3)
    got = edit_stats(tiny_facts, b)
    assert got["changed"] == want["changed"]
    assert got["l2"] == pytest.approx(want["l2"], rel=1e-4)
    d = b.hf.model.layers[1].mlp.down_proj.weight - tiny_facts.hf.model.layers[1].mlp.down_proj.weight
    assert not torch.equal(d != 0, mask)                    # random positions, not the edit's
    assert (d > 0).sum() > 0 and (d < 0).sum() > 0          # both signs
    assert percentile(1.0, [0.0, 0.5, 1.0, 2.0]) == pytest.approx(0.625)


def test_distinct_positions_above_the_permutation_limit(tiny_facts, monkeypatch):
    """The draw used for tensors too large to permute: k distinct positions, deterministic per generator,
    every position equally likely (checked over many draws), and the same matched edit as before."""
    monkeypatch.setattr(benign, "RANDPERM_MAX", 100)
    g = torch.Generator().manual_seed(0)
    draws = [distinct_positions(1000, 30, g) for _ in range(2000)]
    assert all(d.numel() == 30 and d.unique().numel() == 30 and 0 <= int(d.min()) and int(d.max()) < 1000
               for d in draws)
    assert torch.equal(distinct_positions(1000, 30, torch.Generator().manual_seed(5)),
                       distinct_positions(1000, 30, torch.Generator().manual_seed(5)))
    counts = torch.bincount(torch.cat(draws), minlength=1000).float()   # expected 60 each
    assert counts.min() > 25 and counts.max() < 100
    assert abs(float(counts[:500].sum() - counts[500:].sum())) < 1500   # no half favoured (sd ≈ 245)
    # and the matched random-sign edit still matches count and norm through this path
    sparse = clone(tiny_facts)
    w = sparse.hf.model.layers[0].mlp.up_proj.weight
    with torch.no_grad():
        w.view(-1)[:7].add_(0.1)
    sparse.invalidate_identity()
    want, got = edit_stats(tiny_facts, sparse), edit_stats(tiny_facts, matched_random_sign(tiny_facts, sparse, seed=1))
    assert w.numel() > 100 and got["changed"] == want["changed"] == 7
    assert got["l2"] == pytest.approx(want["l2"], rel=1e-4)


def test_benign_finetune_loss_reads_answer_positions_with_full_logit_values(tiny_facts, uneven_task):
    from circuitforge.surgery.objectives import answer_batch, answer_nll, answer_nll_at

    b = answer_batch(tiny_facts, uneven_task, list(range(5)))
    assert sorted(set(b.targets.sum(1).tolist())) == [1, 2, 3]   # answers of 1-3 tokens: padded positions
    w = tiny_facts.hf.model.layers[1].mlp.down_proj.weight
    flag = w.requires_grad
    w.requires_grad_(True)
    try:
        fast, ref = answer_nll_at(tiny_facts, b), answer_nll(tiny_facts.logits(b.tokens), b)
        assert fast.item() == pytest.approx(ref.item(), rel=1e-5)
        (g_fast,), (g_ref,) = torch.autograd.grad(fast, [w]), torch.autograd.grad(ref, [w])
        assert torch.allclose(g_fast, g_ref, rtol=1e-4, atol=1e-7) and g_ref.abs().max() > 0
    finally:
        w.requires_grad_(flag)


def test_hybrid_recovery_figure_from_summary_and_full_result():
    from circuitforge.viz.cad import plot_hybrid_recovery

    summary = {"verdict": "suppression", "hybrid_layers": [0, 1, 2], "hybrid_recovery_forget": [1.0, 1.0, 0.1],
               "hybrid_recovery_forget_ci": [[1, 1], [0.9, 1.1], [0.0, 0.2]], "hybrid_recovery_retain": [1.0, 1.0, 0.9],
               "hybrid_recovery_retain_ci": None}
    fig = plot_hybrid_recovery(summary)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [list(t.y) for t in lines] == [[1.0, 1.0, 0.1], [1.0, 1.0, 0.9]] and "suppression" in fig.layout.title.text
    full = {"verdict": "erasure", "recovery": {"forget": {"layers": [0, 1], "recovery": [1.0, 0.0], "recovery_ci": None},
                                               "retain": None}}
    assert [list(t.y) for t in plot_hybrid_recovery(full).data if t.mode == "lines+markers"] == [[1.0, 0.0]]
    many = plot_hybrid_recovery({"a": summary, "b": full})
    assert len([t for t in many.data if t.mode == "lines+markers"]) == 2


def test_reverse_hybrids_equal_weight_copied_hybrids(tiny_facts, perturbed, forget_task):
    """H'_L (M₀ below L, then M₁ and M₁'s readout) against M₁ with M₀'s embedding and blocks < L copied in."""
    task = forget_task.head(8)
    rev = hybrid_margins(perturbed, tiny_facts, task)
    mb = margin_batch(tiny_facts, task)
    with torch.no_grad():
        for L in rev.layers:
            ref = margins(_hand_built(perturbed, tiny_facts, L).bridge(mb.tokens), mb)
            torch.testing.assert_close(rev.hybrid[L], ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rev.own, margins(tiny_facts.bridge(mb.tokens), mb))


def test_reverse_hybrids_locate_the_edited_block(tiny_facts, forget_task):
    """Known by construction: gradient ascent on the last block gates the answer *after* every L ≤ n − 1
    (R'_L low there, back at L = n where only M₁'s unchanged readout is left); ascent on the first block
    lets an answer handed over at L ≥ 1 through (R'_L high), but not one handed over at L = 0. The late
    gate's suppression share is the larger (the late control also costs same-domain retain rows R'^r ≈ 0.35,
    which the share subtracts)."""
    from circuitforge.cad.controls import early_ascent, late_ascent
    from circuitforge.cad.recovery import reverse_recovery

    forget, retain = forget_task.subset(range(16)), forget_task.subset(range(32, 48))
    n, share = tiny_facts.n_layers, {}
    for where, ascent in (("late", late_ascent), ("early", early_ascent)):
        m = ascent(tiny_facts, forget, 1, lr=5e-4, max_steps=300, retain=forget_task.subset(range(16, 32)))
        r = reverse_recovery(hybrid_margins(m, tiny_facts, forget), hybrid_margins(m, tiny_facts, retain), n_boot=200)
        f = r["forget"]
        if where == "late":
            assert max(f[:n]) < 0.5 and f[n] > 0.8
        else:
            assert f[0] < 0.5 and min(f[1:]) > 0.8
        share[where] = r["suppression_share"]
    assert share["late"] > share["early"] + 0.1


def _edit_blocks(base, blocks, scale=0.05):
    m = clone(base, spec=f"tiny-facts+blocks{blocks}")
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for b in blocks:
            for p in m.hf.model.layers[b].parameters():
                p.add_(scale * torch.randn(p.shape, generator=g))
    m.invalidate_identity()
    return m


def test_differing_parts_places_every_edit(tiny_facts):
    from circuitforge.cad.hybrids import differing_parts

    n = tiny_facts.n_layers
    assert differing_parts(tiny_facts, clone(tiny_facts)) == frozenset()
    assert differing_parts(tiny_facts, _edit_blocks(tiny_facts, [1])) == {1}
    emb = clone(tiny_facts)
    with torch.no_grad():
        emb.hf.model.embed_tokens.weight[5] += 0.1
    assert differing_parts(tiny_facts, emb) == {-1, n}   # tied: the readout changes too
    norm = clone(tiny_facts)
    with torch.no_grad():
        norm.hf.model.norm.weight.mul_(1.1)
    assert differing_parts(tiny_facts, norm) == {n}


@pytest.mark.parametrize("blocks", [[0], [2], [1, 2]])
def test_hybrids_of_unedited_parts_are_copied_not_recomputed(tiny_facts, forget_task, monkeypatch, blocks):
    """Hybrids cut outside the edited blocks are M₀ or M₁ exactly: copying their margins gives the curve
    computed at every layer, and only the cuts inside the edited range run."""
    import circuitforge.cad.hybrids as hy

    task = forget_task.head(8)
    m = _edit_blocks(tiny_facts, blocks)
    full = hybrid_margins(tiny_facts, m, task, parts=None)
    calls: list[int] = []
    real = hy.resume_logits
    monkeypatch.setattr(hy, "resume_logits", lambda b, r, L, last=None: calls.append(L) or real(b, r, L, last))
    fast = hybrid_margins(tiny_facts, m, task)
    torch.testing.assert_close(fast.hybrid, full.hybrid, atol=1e-4, rtol=1e-4)
    assert calls == [L for L in full.layers if min(blocks) < L <= max(blocks)]
    assert (full.hybrid[-1] - full.base).abs().max() > 0.05   # the edit matters
    rev_full = hybrid_margins(m, tiny_facts, task, parts=None)
    rev_fast = hybrid_margins(m, tiny_facts, task)
    torch.testing.assert_close(rev_fast.hybrid, rev_full.hybrid, atol=1e-4, rtol=1e-4)
