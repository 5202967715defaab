"""Circuit selection, pruning, faithfulness (against an independent hook-based ablation), minimal
circuits and JSON."""

import pytest
import torch

from circuitforge.attribution import attribute, layout
from circuitforge.attribution.corruption import encode_task
from circuitforge.attribution.metrics import logit_diff, reduce
from circuitforge.circuits import (
    Circuit,
    faithfulness,
    keep_mask,
    minimal_circuit,
    prune,
    select_greedy,
    select_threshold,
    select_top_n,
)
from circuitforge.data import load_task, task_from_rows

ROWS = [
    {"prompt": "the symbol of elem1 is", "answer": "sym3", "corrupt_prompt": "the symbol of elem2 is", "corrupt_answer": "sym5"},
    {"prompt": "the capital of land4 is", "answer": "city1", "corrupt_prompt": "the capital of land7 is", "corrupt_answer": "city9"},
    {"prompt": "elem9 is written as", "answer": "sym2", "corrupt_prompt": "elem3 is written as", "corrupt_answer": "sym8"},
]


@pytest.fixture(scope="module")
def facts_task():
    return load_task("tiny-facts:forget").head(12)


def _hook_ablation_faithfulness(h, task, keep_nodes):
    """Independent check: plain TransformerLens hooks (no circuitforge plumbing) — every head / MLP not
    in ``keep_nodes`` gets its corrupt-run output (via hook_z / hook_mlp_out) on the clean prompts."""
    b = h.bridge
    batch = encode_task(h, task)
    rows = torch.arange(len(batch))
    names = [f"blocks.{L}.attn.hook_z" for L in range(h.n_layers)] + [f"blocks.{L}.hook_mlp_out" for L in range(h.n_layers)]
    cache = {}
    with torch.no_grad():
        with b.hooks(fwd_hooks=[(n, lambda x, hook, n=n: cache.__setitem__(n, x.clone())) for n in names]):
            corr = b(batch.corrupt)[rows, batch.last]
        clean = b(batch.clean)[rows, batch.last]

        def z_patch(L):
            def fn(x, hook):
                x = x.clone()
                for hh in range(h.n_heads):
                    if f"a{L}.h{hh}" not in keep_nodes:
                        x[:, :, hh] = cache[f"blocks.{L}.attn.hook_z"][:, :, hh]
                return x
            return fn

        fwd = [(f"blocks.{L}.attn.hook_z", z_patch(L)) for L in range(h.n_layers)]
        fwd += [(f"blocks.{L}.hook_mlp_out", lambda x, hook, L=L: cache[f"blocks.{L}.hook_mlp_out"])
                for L in range(h.n_layers) if f"m{L}" not in keep_nodes]
        with b.hooks(fwd_hooks=fwd):
            circ = b(batch.clean)[rows, batch.last]
    m = [float(reduce(logit_diff(x, batch))) for x in (clean, corr, circ)]
    return (m[2] - m[1]) / (m[0] - m[1])


@pytest.mark.parametrize("spec", ["tiny_gpt2", "tiny_llama", "tiny_facts"])
def test_faithfulness_matches_hook_ablation(spec, request, facts_task):
    h = request.getfixturevalue(spec)
    task = facts_task if spec == "tiny_facts" else task_from_rows(ROWS, "mini")
    g = attribute(h, task, level="node")
    for n in (2, 5):
        c = select_top_n(g, n, prune_dangling=False)
        writers = {w for w in c.nodes if ".kv" not in w}
        assert len(writers) == n
        f = faithfulness(h, task, c)
        ref = _hook_ablation_faithfulness(h, task, writers)
        assert f == pytest.approx(ref, abs=2e-3)
    full = select_top_n(g, len(g.writers))
    assert faithfulness(h, task, full) == pytest.approx(1.0, abs=1e-3)
    assert faithfulness(h, task, Circuit(edges=[], model=c.model)) == pytest.approx(0.0, abs=1e-3)


def test_nodes_prune_and_selectors():
    lay = layout(2, 4, 2)
    c = Circuit(edges=["input->a0.kv1<v>", "a0.h2->m0", "m0->logits"])
    assert c.nodes == {"a0.kv1", "a0.h2", "m0"}
    keep = keep_mask(lay, ["input->a0.h0<q>", "a1.h3->logits", "a0.h0->m1", "m1->logits", "a0.h1->a1.h1<q>"])
    pruned = prune(lay, keep)
    kept = {f"{lay.writers[w]}->{lay.readers[r]}" for w, r in pruned.nonzero().tolist()}
    # a1.h3 has no inputs; a1.h1<q> feeds a head with no outputs; a0.h1 then has no outputs left
    assert kept == {"input->a0.h0<q>", "a0.h0->m1", "m1->logits"}


def test_selection_and_json(tiny_facts, facts_task, tmp_path):
    g = attribute(tiny_facts, facts_task, level="edge")
    top = select_top_n(g, 10, prune_dangling=False)
    assert top.n_edges == 10
    s = sorted(abs(v) for v in g.edge_scores[g.mask].tolist())
    assert min(abs(v) for v in top.scores.values()) == pytest.approx(s[-10])
    th = select_threshold(g, s[-10], prune_dangling=False)
    assert set(th.edges) == set(top.edges)
    gr = select_greedy(g, 15)
    assert gr.n_edges == 15 and any(e.endswith("->logits") for e in gr.edges)
    p = tmp_path / "c.json"
    top.faithfulness = 0.5
    top.to_json(p)
    back = Circuit.from_json(p)
    assert back.edges == top.edges and back.nodes == top.nodes and back.scores == top.scores
    assert back.faithfulness == 0.5 and back.model["sha256"] == tiny_facts.sha256


def test_minimal_circuit_and_edited_model(tiny_facts, facts_task, fresh):
    c = minimal_circuit(tiny_facts, facts_task, faithfulness=0.7, stability=True)
    assert c.reached and c.faithfulness >= 0.7 and "reach" in c.message
    assert [p["n"] for p in c.curve] == sorted(p["n"] for p in c.curve)
    smaller = [p for p in c.curve if p["n"] < c.selection["n"]]
    assert all(p["faithfulness"] < 0.7 for p in smaller)
    assert c.faithfulness == pytest.approx(faithfulness(tiny_facts, facts_task, c), abs=1e-5)
    assert c.baselines["random"] < c.faithfulness and "weight_magnitude" in c.baselines
    assert 0 <= c.stability["jaccard_mean"] <= 1 and len(c.stability["splits"]) == 3
    never = minimal_circuit(tiny_facts, facts_task, faithfulness=5.0, baselines=False)
    assert never.reached is False and "no circuit reaches" in never.message
    # the same circuit evaluated inside an edited copy (same architecture)
    edited = fresh("tiny-facts")
    with torch.no_grad():
        for n in sorted(c.nodes)[:2]:
            from circuitforge.models import component_params

            for ps in component_params(edited, n):
                ps.view.mul_(0.0)
    f_edit = faithfulness(edited, facts_task, c)
    assert f_edit != pytest.approx(c.faithfulness, abs=1e-3)
    # reuse is allowed only on the weights and rows the circuit was found on
    assert c.found_on(tiny_facts, facts_task)
    assert not c.found_on(edited, facts_task)
    assert not c.found_on(tiny_facts, facts_task.head(len(facts_task) - 1))
