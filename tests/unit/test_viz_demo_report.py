"""The demo report and its figures, on synthetic inputs (no model is loaded; each test takes < 2 s).

Checked: the verdict sentences and the summary table come before any figure; the circuit views of a
30-layer circuit follow the page width; the circuit diff leaves unchanged edges out; the scorecard bullet
bars are the scorecard values; every number on the page comes from the inputs.
"""

import random
import re

import pytest

from circuitforge.circuits.circuit import Circuit
from circuitforge.viz.circuit import plot_circuit, plot_circuit_heatmap
from circuitforge.viz.demo_report import demo_report, verdict_sentence
from circuitforge.viz.diff import changed_edges, layer_change, plot_edge_diff, plot_layer_change
from circuitforge.viz.report import plot_scorecard, plot_scorecards

pytest.importorskip("plotly")

L, H, G = 30, 9, 3


def _circuit(n_edges: int = 700, seed: int = 0) -> Circuit:
    """A synthetic SmolLM2-shaped circuit: valid edge ids over 30 layers × 9 heads, 3 KV groups."""
    rng = random.Random(seed)
    edges: dict[str, float] = {"input->m0": 20.0, f"m{L - 1}->logits": 5.0}
    while len(edges) < n_edges:
        a = rng.randrange(-1, L - 1)
        b = rng.randrange(a + 1, L)
        src = "input" if a < 0 else rng.choice([f"a{a}.h{rng.randrange(H)}", f"m{a}"])
        dst = rng.choice([f"a{b}.h{rng.randrange(H)}<q>", f"a{b}.kv{rng.randrange(G)}<k>", f"m{b}", "logits"])
        edges[f"{src}->{dst}"] = rng.gauss(0, 1) * 10 ** rng.uniform(-2, 0)
    model = {"spec": "synthetic-30L", "n_layers": L, "n_heads": H, "n_kv_heads": G,
             "source_dir": "/home/someone/.cache/model"}
    return Circuit(edges=list(edges), faithfulness=0.81, model=model, scores=edges,
                   method={"name": "eap-ig", "ig_steps": 5})


def _cad(circuit: Circuit, factors: dict[str, float], verdict: str) -> dict:
    """A CAD result dict whose edited scores are base × factor (factor 1 for edges not named)."""
    rows = []
    for e in circuit.edges:
        b = circuit.scores[e]
        ed = b * factors.get(e, 1.0)
        rows.append({"edge": e, "base": b, "edited_base_readout": ed, "edited_own_readout": ed, "change": ed - b,
                     "behavioural_change": ed - b, "upstream": True})
    return {"format": "circuitforge.cad/1", "verdict": verdict, "value": 0.9, "z": 7.5, "edges": rows,
            "circuit": circuit.to_dict(), "mechanistic_upstream": {"value": 0.9, "z": 7.5,
                                                                   "null": [0.1, 0.12, 0.09, 0.11, 0.1]}}


def _props(drop: float, rdrop: float, gap: float, z: float, verdict: str) -> dict:
    return {"forgetting": {"value": drop, "threshold": 0.3, "pass": drop >= 0.3, "direction": ">=",
                           "ci": [drop - 0.07, drop + 0.06], "n": 64},
            "retain": {"value": rdrop, "threshold": 0.05, "pass": rdrop <= 0.05, "direction": "<="},
            "ptq_gap": {"value": gap, "threshold": 0.0, "pass": gap <= 0.0, "direction": "<=", "scheme": "nf4"},
            "structural_erasure": {"value": z, "threshold": 3.0, "pass": verdict == "erasure", "verdict": verdict,
                                   "direction": "verdict == erasure"}}


def _summary() -> dict:
    base = {"forget": 0.953, "retain": 0.969, "paraphrase": 0.906, "forget_nf4": 0.938, "retain_nf4": 0.922}
    mansu = {"forget": 0.219, "retain": 0.953, "paraphrase": 0.328, "forget_nf4": 0.219, "retain_nf4": 0.891}
    ga = {"forget": 0.594, "retain": 0.703, "paraphrase": 0.859, "forget_nf4": 0.641, "retain_nf4": 0.688}
    pm, pg = _props(0.734, 0.016, 0.0, 5.41, "erasure"), _props(0.359, 0.266, 0.047, 1.2, "suppression")
    return {
        "format": "circuitforge.demo/1", "model": "synthetic-30L", "seed": 0, "seconds": 311.0,
        "base": {"accuracy": base}, "n": {"forget": 64, "retain": 64, "paraphrase": 64},
        "forget_examples": [{"prompt": "The capital of Zorbia is", "answer": "Quellin"}, "Zorbia's currency is the"],
        "hyperparameters": {"mansu": {"lr": 0.0003, "steps": 40}, "ga": {"lr": 1e-5, "steps": 60}},
        "methods": {
            "mansu": {"accuracy": mansu, "changed_share": 0.0164, "stop_reason": "forget_target_reached",
                      "scorecard": {"properties": pm, "pass": True}, "cad": {"z": 5.41, "verdict": "erasure"}},
            "ga": {"accuracy": ga, "changed_share": 1.0, "scorecard": {"properties": pg, "pass": False},
                   "cad": {"z": 1.2, "verdict": "suppression"}},
        },
        "timings": {"unlearn_mansu": 120.4, "unlearn_ga": 98.2},
        "versions": {"circuitforge": "0.1.0"},
    }


def test_verdict_and_table_come_before_any_figure():
    c = _circuit(120)
    page = demo_report(_summary(), c, {"mansu": _cad(c, {c.edges[0]: 0.0}, "erasure")})
    first_fig = page.index('class="plotly-graph-div"')
    sentence = verdict_sentence("ga", _summary()["methods"]["ga"], _summary()["base"]["accuracy"])
    assert sentence.startswith("ga: FAIL — retain accuracy fell by 0.27 (allowed ≤ 0.05)")
    assert "It passes forgetting." in sentence and "paraphrases are still answered 0.86 (base 0.91)" in sentence
    assert "CAD finds suppression (z = 1.2, erasure needs ≥ 3.0)" in sentence
    assert re.search(r"<span class='fail'>ga: FAIL</span>", page)
    assert page.index("mansu: PASS") < page.index("id='summary-table'") < first_fig
    assert page.index("What was done") < first_fig
    # the summary table carries thresholds with direction, n, CIs, paraphrase, NF4 retain and share edited
    table = page[page.index("id='summary-table'"):first_fig]
    for text in ("drop ≥ 0.30", "drop ≤ 0.05", "gap ≤ 0.00", "z ≥ 3.0", "n = 64", "[0.66, 0.79]", "0.33", "0.89",
                 "1.6%", "100.0%", "FAIL", "PASS"):
        assert text in table, text
    assert "The capital of Zorbia is → Quellin" in page and "lr = 0.0003" in page
    assert "/home/someone" not in page  # no local absolute path leaks from the circuit's model block


def test_circuit_views_follow_the_page_width_at_30_layers():
    c = _circuit(700)
    for fig in (plot_circuit(c), plot_circuit_heatmap(c)):
        assert fig.layout.autosize is True
        assert fig.layout.width is None or fig.layout.width <= 1200
    graph = plot_circuit(c, top_k=50)
    labels = [s.label for s in graph.layout.sliders[0].steps]
    assert labels[:3] == ["10", "25", "50"] and labels[-1] == "all"
    shown = sum(len(t.text) for t in graph.data if t.mode == "markers" and t.hoverinfo == "text"
                and t.visible and t.text and "->" in t.text[0])
    assert shown == 50  # the default view draws the 50 strongest edges, not all 700
    html = demo_report(_summary(), c, {})
    assert '"responsive": true' in html and "max-width:100%" in html
    assert re.search(r'"width":\s*[0-9]{4}', html) is None  # no figure with a fixed width ≥ 1000 px


def test_diff_leaves_unchanged_edges_out():
    c = _circuit(200, seed=1)
    gone, gained = "input->m0", f"m{L - 1}->logits"  # 20.0 → 0 and 5.0 → 15.0
    tiny, faint = c.edges[11], c.edges[12]
    c.scores[tiny], c.scores[faint] = 4.0, 0.05
    # tiny: 1% of its own score; faint: all of its score, but 0.25% of the largest edge (noise level)
    cad = _cad(c, {gone: 0.0, gained: 3.0, tiny: 1.01, faint: 0.0}, "erasure")
    diff = changed_edges(cad)
    assert list(diff) == [gone, gained] and diff[gone] == pytest.approx(-20.0) and diff[gained] == pytest.approx(10.0)
    assert tiny not in diff and all(v != 0 for v in diff.values())
    fig = plot_edge_diff({"mansu": cad, "ga": _cad(c, {}, "unchanged")})
    drawn = {t for tr in fig.data if tr.mode == "markers" and tr.text for t in tr.text if "->" in t}
    assert {d.split(":")[0] for d in drawn} == set(diff)
    assert "0 of 200 edges changed" in fig.layout.annotations[1].text
    lc = layer_change(cad)
    assert sum(lc["lost"]) + sum(lc["gained"]) == pytest.approx(sum(r["change"] for r in cad["edges"]))
    bars = plot_layer_change({"mansu": cad, "ga": _cad(c, {}, "unchanged")})
    assert bars.layout.xaxis.range == bars.layout.xaxis2.range  # methods side by side on one scale


def test_bullet_bars_are_the_scorecard_values():
    s = _summary()
    cards = {m: s["methods"][m]["scorecard"]["properties"] for m in s["methods"]}
    fig = plot_scorecards(cards)
    bars = [t for t in fig.data if t.type == "bar"]
    expected = [cards[m][p]["value"] for p in cards["mansu"] for m in cards]
    assert [t.x[0] for t in bars] == expected
    ticks = [t.x[0] for t in fig.data if t.type == "scatter" and t.name == "threshold"]
    assert ticks == [cards[m][p]["threshold"] for p in cards["mansu"] for m in cards]
    one = plot_scorecard(cards["ga"])
    assert [t.x[0] for t in one.data if t.type == "bar"] == [p["value"] for p in cards["ga"].values()]
    # the CI is drawn as an error bar around the value
    forget = bars[0]
    assert forget.error_x.array[0] == pytest.approx(0.06) and forget.error_x.arrayminus[0] == pytest.approx(0.07)
    assert "passes when ≥ 0.3" in fig.layout.annotations[0].text and "≤ 0.05" in fig.layout.annotations[1].text
    texts = [t for t in fig.data if t.type == "scatter" and t.mode == "text"]
    assert list(texts[0].text) == ["0.734 PASS", "0.359 PASS"] and list(texts[3].text) == ["5.41 PASS", "1.2 FAIL"]
    assert [t.y[0] for t in bars[:2]] == ["mansu", "ga"]  # one panel per property, one bar per method


def test_report_tolerates_a_minimal_summary():
    c = _circuit(30)
    s = {"model": "m", "methods": {"x": {"accuracy": {"forget": 0.5}, "cad": {}, "scorecard": {}}}}
    page = demo_report(s, c, {})
    assert "x: NO VERDICT" in page and "x: PASS" not in page  # no scorecard: no verdict is made up
    assert "chance level not recorded" in page


def test_no_empty_recovery_figure_without_recovery_data():
    c = _circuit(40)
    page = demo_report(_summary(), c, {"mansu": _cad(c, {"input->m0": 0.0}, "erasure")})
    assert "layer-hybrid recovery" not in page  # the CAD dict has no hybrid curves: the figure is left out
    assert "split-half null draws (count)" in page  # the null histogram's y-axis is named


def test_verify_report_uses_the_width_responsive_diff():
    from circuitforge.viz.report import verify_report

    c = _circuit(300)
    cad = _cad(c, {"input->m0": 0.0}, "erasure")
    cad["behavioural"] = dict(cad["mechanistic_upstream"])
    cad["layer_mass"] = {"layers": [-1, 0, 1], "base": [1.0, 2.0, 3.0], "edited_own_readout": [0.5, 1.0, 3.0],
                         "edited_base_readout": [0.0, 1.0, 3.0]}
    card = {"base": {"spec": "b", "sha256": "0" * 64}, "unlearned": {"spec": "u", "sha256": "1" * 64}, "pass": True,
            "properties": _props(0.7, 0.0, 0.0, 7.5, "erasure"), "accuracies": {"forget": 0.2}}
    page = verify_report(card, cad)
    assert "1 of 300 edges changed" in page
    assert re.search(r'"width":\s*[0-9]{4}', page) is None


def test_verify_report_shows_the_evidence_the_exit_code_reads():
    """The verify page carries what decides the exit code beside the verdict: the relearning attack's
    recovery and gate (or why it did not run), the notes, the verdict's erasure score and rule, and the
    hybrid recovery curve when the CAD result has one."""
    from circuitforge.viz.report import relearn_row, verify_report

    c = _circuit(30)
    cad = _cad(c, {"input->m0": 0.0}, "erasure")
    cad["behavioural"] = dict(cad["mechanistic_upstream"])
    cad["layer_mass"] = {"layers": [-1, 0, 1], "base": [1.0, 2.0, 3.0], "edited_own_readout": [0.5, 1.0, 3.0],
                         "edited_base_readout": [0.0, 1.0, 3.0]}
    cad["evidence"] = {"erasure_score": 0.96, "erasure_score_ci": [0.94, 0.98], "rule": "erasure score CI above 0.12"}
    cad["recovery"] = {"forget": {"layers": [0, 1, 2], "recovery": [1.0, 0.1, 0.0], "recovery_ci": None},
                       "retain": {"layers": [0, 1, 2], "recovery": [1.0, 0.9, 0.95], "recovery_ci": None}}
    card = {"base": {"spec": "b", "sha256": "0" * 64}, "unlearned": {"spec": "u", "sha256": "1" * 64}, "pass": False,
            "properties": _props(0.7, 0.0, 0.0, 7.5, "erasure"), "accuracies": {"forget": 0.2},
            "notes": ["the relearning attack brings part of it back"]}
    rl = {"recovery": 0.95, "ci": [0.86, 1.07], "best_budget": 10, "n_held": 64, "threshold": 0.5, "pass": False,
          "call": "fail"}
    page = verify_report(card, cad, rl)
    assert "recovery 0.95 [0.86, 1.07] after 10 steps (64 held-out rows); gate ≤ 0.50: FAIL (from the CI: fail)" in page
    assert "the relearning attack brings part of it back" in page
    assert "E 0.96 [0.94, 0.98]" in page and "erasure score CI above 0.12" in page
    assert "Recovery evidence: layer hybrids" in page
    assert "not run (--no-relearn)" in verify_report(card, cad, None)
    assert relearn_row({"skipped": "one group"}) == "not run: one group"
    assert relearn_row({"recovery": None}).startswith("undefined")
    assert relearn_row({"recovery": 0.2, "ci": None, "best_budget": 5, "n_held": 8}).endswith("reported only (--max-relearn inf)")
    del cad["recovery"]
    assert "Recovery evidence: layer hybrids" not in verify_report(card, cad, rl)   # no curves, no empty figure
