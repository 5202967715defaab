"""EAP / EAP-IG / exact patching against each other and against hand-made ground truths."""

import pytest
import torch
from _linear import linearise

from circuitforge.attribution import attribute, encode_task, layout_of
from circuitforge.attribution import hooks as H
from circuitforge.attribution.common import chunks
from circuitforge.attribution.metrics import logit_diff, reduce
from circuitforge.data import task_from_rows
from circuitforge.errors import CircuitForgeError

ROWS = [
    {"prompt": "the symbol of elem1 is", "answer": "sym3", "corrupt_prompt": "the symbol of elem2 is", "corrupt_answer": "sym5"},
    {"prompt": "the capital of land4 is", "answer": "city1", "corrupt_prompt": "the capital of land7 is", "corrupt_answer": "city9"},
    {"prompt": "elem9 is written as", "answer": "sym2", "corrupt_prompt": "elem3 is written as", "corrupt_answer": "sym8"},
]


@pytest.fixture(scope="module")
def task():
    return task_from_rows(ROWS, "mini")


@pytest.mark.parametrize("spec", ["tiny-gpt2", "tiny-llama", "tiny-gemma3"])
def test_eap_equals_exact_on_linear_model(spec, task, fresh):
    h = fresh(spec)
    undo = linearise(h)
    try:
        for level in ("node", "edge"):
            g = attribute(h, task, method="eap", level=level)
            x = attribute(h, task, method="exact", level=level)
            a, b = (g.node_scores, x.node_scores) if level == "node" else (g.edge_scores, x.edge_scores)
            assert b.abs().max() > 1e-6
            torch.testing.assert_close(a, b, atol=2e-6 + 2e-3 * float(b.abs().max()), rtol=0)
        # IG on an affine model is the same as EAP
        ig = attribute(h, task, method="eap-ig", level="node", ig_steps=3)
        torch.testing.assert_close(ig.node_scores, g.node_scores, atol=2e-6 + 2e-3 * float(g.node_scores.abs().max()), rtol=0)
    finally:
        undo()


@pytest.mark.parametrize("spec", ["tiny_gpt2", "tiny_llama", "tiny_gemma3"])
def test_full_and_empty_graph_patching(spec, task, request):
    h = request.getfixturevalue(spec)
    lay = layout_of(h)
    up = lay.upstream()
    for corruption in ("counterfactual", "mean", "zero"):
        batch = encode_task(h, task, corruption)
        ch = next(chunks(batch, logit_diff, None))
        from circuitforge.attribution import common as C

        with H.prepared(h):
            abl = None if corruption == "counterfactual" else (
                C.mean_writers(h, batch, None) if corruption == "mean" else C.zero_writers(h))
            st = C.clean_and_corrupt(h, ch, logit_diff, abl)
            full = C.ablated_metric(h, ch, st.corr_writers, up)
            empty = C.ablated_metric(h, ch, st.corr_writers, torch.zeros_like(up))
        gap = abs(st.clean_metric - st.corrupt_metric)
        assert gap > 1e-4
        assert full == pytest.approx(st.clean_metric, abs=1e-3 * gap + 1e-6)
        assert empty == pytest.approx(st.corrupt_metric, abs=1e-3 * gap + 1e-6)
    # the counterfactual empty graph is the corrupt prompt's own metric
    batch = encode_task(h, task)
    with torch.no_grad():
        ll = h.logits(batch.corrupt)[torch.arange(len(batch)), batch.last]
    with H.prepared(h):
        ch = next(chunks(batch, logit_diff, None))
        st = C.clean_and_corrupt(h, ch, logit_diff, None)
    assert st.corrupt_metric == pytest.approx(float(reduce(logit_diff(ll, batch))), abs=1e-4)


def test_exact_node_input_is_total_effect(tiny_llama, task):
    x = attribute(tiny_llama, task, method="exact", level="node")
    assert x.node_score("input") == pytest.approx(x.clean_metric - x.corrupt_metric, abs=1e-4)


def test_chunking_does_not_change_scores(tiny_llama, task):
    a = attribute(tiny_llama, task, method="eap", level="edge", batch_size=None, per_row=True)
    b = attribute(tiny_llama, task, method="eap", level="edge", batch_size=2)
    torch.testing.assert_close(a.edge_scores, b.edge_scores, atol=1e-5, rtol=1e-4)
    assert a.row_node_scores.shape == (3, len(a.writers))
    torch.testing.assert_close(a.row_node_scores.mean(0), a.node_scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.row_edge_scores.mean(0), a.edge_scores, atol=1e-5, rtol=1e-4)


def test_metrics_and_ablations_run(tiny_gpt2, task):
    for metric in ("logprob", "kl", lambda logits, batch: logits[:, 0]):
        g = attribute(tiny_gpt2, task, metric=metric, method="eap", level="node")
        assert torch.isfinite(g.node_scores).all()
    g = attribute(tiny_gpt2, task, metric="kl")
    assert g.clean_metric == pytest.approx(0.0, abs=1e-5) and g.corrupt_metric < 0
    for corruption in ("mean", "zero"):
        for method in ("eap", "eap-ig", "exact"):
            g = attribute(tiny_gpt2, task, method=method, corruption=corruption, ig_steps=2)
            assert torch.isfinite(g.node_scores).all()
    g = attribute(tiny_gpt2, task, method="eap-ig", ig_mode="activations", ig_steps=2, level="edge")
    torch.testing.assert_close(g.edge_scores.sum(1), g.node_scores, atol=1e-6, rtol=1e-4)


def test_length_mismatch_names_the_row(tiny_llama):
    rows = [dict(ROWS[0]), {"prompt": "the symbol of elem1 is", "answer": "sym3",
                            "corrupt_prompt": "the symbol of the elem2 is", "corrupt_answer": "sym5"}]
    t = task_from_rows(rows, "bad")
    with pytest.raises(CircuitForgeError, match="row 2.*6 tokens.*7"):
        attribute(tiny_llama, t)
    t2 = task_from_rows([{"prompt": "the symbol of elem1 is", "answer": "sym3"}], "nocorr")
    with pytest.raises(CircuitForgeError, match="row 1.*corrupt_prompt"):
        attribute(tiny_llama, t2)
    with pytest.raises(CircuitForgeError):
        attribute(tiny_llama, t2, method="nope")


def test_state_is_restored(fresh, task):
    h = fresh("tiny-gpt2")
    b = h.bridge
    b.train()
    params = list(b.parameters())
    params[0].requires_grad_(False)
    attribute(h, task, method="eap", level="edge")
    assert b.training and not params[0].requires_grad and params[1].requires_grad
    assert not b.cfg.use_attn_result and not b.cfg.use_split_qkv_input and not b.cfg.use_hook_mlp_in
    assert not any(hp.fwd_hooks or hp.bwd_hooks for hp in b.hook_dict.values())


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_per_row_scores_of_chosen_edges_equal_the_full_per_row_scores(tiny_llama, task, method):
    """``edges=`` with ``per_row`` computes only those edges' per-row scores: equal to the full per-row
    tensor on them, 0 elsewhere, and the task-mean edge scores unchanged."""
    full = attribute(tiny_llama, task, method=method, level="edge", per_row=True, ig_steps=2, batch_size=2)
    nz = full.edge_scores.abs().flatten().argsort(descending=True)[:25]
    R = len(full.readers)
    edges = [f"{full.writers[int(i) // R]}->{full.readers[int(i) % R]}" for i in nz]
    sub = attribute(tiny_llama, task, method=method, level="edge", per_row=True, ig_steps=2, batch_size=2, edges=edges)
    w, r = nz // R, nz % R
    torch.testing.assert_close(sub.row_edge_scores[:, w, r], full.row_edge_scores[:, w, r], atol=1e-6, rtol=1e-5)
    assert float(full.row_edge_scores[:, w, r].abs().min()) > 0   # the chosen edges carry scores
    mask = torch.ones_like(full.edge_scores, dtype=torch.bool)
    mask[w, r] = False
    assert float(sub.row_edge_scores[:, mask].abs().max()) == 0.0
    torch.testing.assert_close(sub.edge_scores, full.edge_scores, atol=1e-6, rtol=1e-5)
    with pytest.raises(CircuitForgeError):
        attribute(tiny_llama, task, method=method, level="edge", per_row=True, edges=["m0->nowhere"])
