"""Weight gradients restricted to the subject positions (MANSU ``forget_positions="subject"``): the subject is
the counterfactual's changed span, the forward is unchanged, and each weight's gradient equals
``Σ_{t kept} g_t x_tᵀ`` recomputed from the output gradients and inputs captured in a plain backward pass."""

import pytest
import torch

from circuitforge.data import ClozeItem
from circuitforge.errors import CircuitForgeError
from circuitforge.surgery.objectives import answer_batch, answer_nll
from circuitforge.surgery.positions import subject_mask, subject_span, weight_grad_positions


def test_subject_span_is_the_tokens_the_counterfactual_changes(tiny_facts, forget_task):
    from circuitforge.data.scoring import encode

    it = forget_task.items[0]
    a, b = subject_span(tiny_facts, it)
    ids, n = encode(tiny_facts, it.prompt, "")
    subj = it.prompt.split()[3]  # "the symbol of elemK is"
    assert tiny_facts.tokenizer.decode(ids[a:b]).strip() == subj, (a, b, ids)
    assert 0 < a < b < n
    with pytest.raises(CircuitForgeError, match="corrupt_prompt"):
        subject_span(tiny_facts, ClozeItem(prompt="the symbol of elem0 is", answer=" sym21", distractors=(" sym1",)))


def test_gradient_collects_only_at_kept_positions(tiny_facts, forget_task):
    names = ["model.layers.1.mlp.down_proj.weight", "model.layers.2.self_attn.q_proj.weight"]
    params = tiny_facts.named_parameters()
    mods = {n: m for _, m in tiny_facts.hf.named_modules() for n in names
            if isinstance(m, torch.nn.Linear) and m.weight is params[n]}
    rows = [0, 1, 2, 3]
    b = answer_batch(tiny_facts, forget_task, rows)
    keep = subject_mask(tiny_facts, forget_task, rows, b.row, b.tokens.shape[1])
    assert keep.any(dim=1).all() and not keep.all()

    # reference: a plain backward, capturing every position's input x_t and output gradient g_t
    xs, gs, hooks = {}, {}, []
    for n, m in mods.items():
        def fwd(mod, inp, out, n=n):
            xs[n] = inp[0].detach()
            out.register_hook(lambda g, n=n: gs.__setitem__(n, g.detach()))
        hooks.append(m.register_forward_hook(fwd))
    flags = {n: params[n].requires_grad for n in names}
    for n in names:
        params[n].requires_grad_(True)
        params[n].grad = None
    try:
        logits_plain = tiny_facts.logits(b.tokens)
        answer_nll(logits_plain, b).backward()
    finally:
        for h in hooks:
            h.remove()
    full = {n: params[n].grad.clone() for n in names}
    want = {n: torch.einsum("spo,spi->oi", gs[n] * keep[..., None], xs[n]) for n in names}
    for n in names:
        params[n].grad = None
    with weight_grad_positions(tiny_facts, names, keep):
        logits = tiny_facts.logits(b.tokens)
        answer_nll(logits, b).backward()
    got = {n: params[n].grad.clone() for n in names}
    for n in names:
        params[n].grad = None
        params[n].requires_grad_(flags[n])
    assert torch.allclose(logits, logits_plain)
    for n in names:
        assert torch.allclose(got[n], want[n], atol=1e-6, rtol=1e-4), n
        assert not torch.allclose(got[n], full[n], atol=1e-6), n  # the restriction changes the gradient
    # the hooks are gone afterwards, and a mask of the wrong shape is refused
    with pytest.raises(CircuitForgeError, match="does not match"), weight_grad_positions(tiny_facts, names, keep[:1]):
        tiny_facts.logits(b.tokens)


def test_subject_mlp_positions_restrict_only_the_mlp_weights(tiny_facts, forget_task):
    """``positions="subject-mlp"``: the MLP weights get exactly the ``"subject"`` gradient, the attention
    weights the every-position one (and the two differ, so the split is visible)."""
    from circuitforge.surgery.mansu_steps import forget_gradient

    task = forget_task.head(6)
    names = [n for n in tiny_facts.named_parameters() if n.startswith("model.layers.1.") and n.endswith("proj.weight")]
    mask = {n: torch.ones_like(tiny_facts.named_parameters()[n], dtype=torch.bool) for n in names}
    got = {pos: forget_gradient(tiny_facts, task, mask, positions=pos)[1] for pos in ("all", "subject", "subject-mlp")}
    mlp = [n for n in names if ".mlp." in n]
    attn = [n for n in names if ".self_attn." in n]
    assert mlp and attn
    for n in mlp:
        assert torch.equal(got["subject-mlp"][n], got["subject"][n]), n
        assert not torch.allclose(got["subject-mlp"][n], got["all"][n]), n
    for n in attn:   # "all" runs each row's options packed, the subject modes unpacked: equal up to float order
        torch.testing.assert_close(got["subject-mlp"][n], got["all"][n], rtol=1e-4, atol=1e-7)
        assert not torch.allclose(got["subject-mlp"][n], got["subject"][n]), n
    with pytest.raises(CircuitForgeError, match="positions must be"):
        forget_gradient(tiny_facts, task, mask, positions="subjects")
