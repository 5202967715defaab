"""Graph layout, ids, upstream mask and JSON round trips (no model runs except one tiny EAP)."""

import json

import pytest
import torch

from circuitforge.attribution import Graph, attribute, layout
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


def test_layout_ids_and_gqa_readers():
    lay = layout(2, 4, 2)
    assert lay.writers[:6] == ("input", "a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0")
    assert len(lay.writers) == 1 + 2 * 5
    assert lay.readers[:9] == ("a0.h0<q>", "a0.h1<q>", "a0.h2<q>", "a0.h3<q>", "a0.kv0<k>", "a0.kv1<k>",
                               "a0.kv0<v>", "a0.kv1<v>", "m0")
    assert len(lay.readers) == 2 * 9 + 1 and lay.readers[-1] == "logits"
    up = lay.upstream()
    w, r = lay.writer_index, lay.reader_index
    assert up[w("input"), r("a0.h0<q>")] and not up[w("a0.h1"), r("a0.h0<q>")]
    assert up[w("a0.h1"), r("m0")] and not up[w("m0"), r("m0")]
    assert up[w("m0"), r("a1.kv1<v>")] and not up[w("a1.h0"), r("a1.kv0<k>")]
    assert bool(up[:, r("logits")].all())
    with pytest.raises(CircuitForgeError):
        lay.reader_index("a0.kv2<k>")


@pytest.mark.parametrize("spec", ["tiny_gpt2", "tiny_llama", "tiny_gemma3"])
def test_edge_scores_sum_to_node_scores(spec, task, request):
    h = request.getfixturevalue(spec)
    g = attribute(h, task, method="eap", level="edge")
    assert g.edge_scores is not None
    assert torch.isfinite(g.node_scores).all()
    assert (g.edge_scores[~g.layout.upstream()] == 0).all()
    torch.testing.assert_close(g.edge_scores.sum(1), g.node_scores, atol=1e-6, rtol=1e-4)
    assert g.node_scores.abs().max() > 0
    # the input node's score is nonzero under counterfactual corruption
    assert abs(g.node_score("input")) > 0
    eg = attribute(h, task, method="eap-ig", level="edge", ig_steps=2)
    torch.testing.assert_close(eg.edge_scores.sum(1), eg.node_scores, atol=1e-6, rtol=1e-4)


def test_graph_json_round_trip(tiny_llama, task, tmp_path):
    g = attribute(tiny_llama, task, method="eap", level="edge")
    path = tmp_path / "g.json"
    g.to_json(path)
    d = json.loads(path.read_text())
    assert d["format"] == "circuitforge.graph/1"
    assert d["model"]["sha256"] == tiny_llama.sha256 and d["task"]["sha256"] == task.sha256
    assert d["method"]["name"] == "eap" and "torch" in d["versions"]
    assert len(d["edges"]) == int(g.layout.upstream().sum())
    e0 = d["edges"][5]
    assert g.edge_score(f"{e0['src']}->{e0['dst']}") == pytest.approx(e0["score"])
    back = Graph.from_json(path)
    assert back.writers == g.writers and back.readers == g.readers
    assert torch.equal(back.node_scores, g.node_scores)
    assert torch.equal(back.edge_scores, g.edge_scores)
    assert back.method == "eap" and back.settings["corruption"] == "counterfactual"
    assert back.clean_metric == g.clean_metric
    # node-level graph with unmeasured (NaN) nodes survives too
    x = attribute(tiny_llama, task, method="exact", level="node", nodes=["a0.h1", "m1"])
    xb = Graph.from_json(x.to_json())
    assert torch.isnan(xb.node_scores).sum() == len(x.writers) - 2
    assert xb.node_score("m1") == pytest.approx(x.node_score("m1"))
    with pytest.raises(CircuitForgeError):
        Graph.from_json('{"format": "other/1"}')


@pytest.mark.parametrize("spec", ["tiny_gpt2", "tiny_llama", "tiny_gemma3"])
def test_fast_node_path_matches_edge_path(spec, task, request):
    h = request.getfixturevalue(spec)
    node = attribute(h, task, method="eap", level="node", per_row=True)
    edge = attribute(h, task, method="eap", level="edge")
    scale = float(edge.node_scores.abs().max())
    torch.testing.assert_close(node.node_scores, edge.node_scores, atol=1e-5 * scale + 1e-8, rtol=1e-4)
    assert node.clean_metric == pytest.approx(edge.clean_metric, abs=1e-5)
    torch.testing.assert_close(node.row_node_scores.mean(0), node.node_scores, atol=1e-6, rtol=1e-4)
