"""`circuitforge attribute` and `circuitforge circuit` end to end on the tiny fact model."""

import json

from typer.testing import CliRunner

from circuitforge.cli import app


def test_attribute_then_circuit(tmp_path):
    r = CliRunner()
    g = tmp_path / "g.json"
    res = r.invoke(app, ["attribute", "--model", "tiny-facts", "--task", "tiny-facts:forget", "--method", "eap",
                         "--level", "edge", "--out", str(g)])
    assert res.exit_code == 0, res.output
    d = json.loads(g.read_text())
    assert d["format"] == "circuitforge.graph/1" and d["model"]["spec"] == "tiny-facts"
    assert d["task"]["source"] == "tiny-facts:forget" and d["edges"]
    c = tmp_path / "c.json"
    html = tmp_path / "c.html"
    res = r.invoke(app, ["circuit", "--graph", str(g), "--faithfulness", "0.8", "--out", str(c), "--html", str(html)])
    assert res.exit_code == 0, res.output
    cd = json.loads(c.read_text())
    assert cd["format"] == "circuitforge.circuit/1" and cd["reached"] and cd["faithfulness"] >= 0.8
    assert cd["curve"] and "random" in cd["baselines"]
    assert "plotly" in html.read_text()[:200000].lower()
    res = r.invoke(app, ["circuit", "--graph", str(g), "--top-n", "5", "--out", str(c)])
    assert res.exit_code == 0 and len(json.loads(c.read_text())["edges"]) <= 5
    res = r.invoke(app, ["circuit", "--graph", str(g), "--out", str(c)])
    assert res.exit_code != 0
