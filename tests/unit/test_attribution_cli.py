"""`circuitforge attribute` and `circuitforge circuit` end to end on the tiny fact model."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from circuitforge.cli import app

ATTRIBUTE = ["attribute", "--model", "tiny-facts", "--task", "tiny-facts:forget", "--level", "edge"]


def test_attribute_then_circuit(tmp_path):
    r = CliRunner()
    g = tmp_path / "g.json"
    res = r.invoke(app, [*ATTRIBUTE, "--method", "eap", "--out", str(g)])
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


def test_attribute_with_memory_budget(tmp_path):
    r = CliRunner()
    g = tmp_path / "g.json"
    res = r.invoke(app, [*ATTRIBUTE, "--memory-budget", "4MB", "--out", str(g)])
    assert res.exit_code == 0, res.output
    mem = json.loads(g.read_text())["method"]["memory"]
    assert mem["budget"] == 4 * 2**20 and mem["peak"] <= mem["budget"] and mem["rows"] < 48
    assert "rows per pass, measured peak" in res.output
    p = subprocess.run([sys.executable, "-m", "circuitforge", *ATTRIBUTE, "--memory-budget", "1kB", "--out",
                        str(tmp_path / "x.json")], capture_output=True, text=True, timeout=300)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1 and "1.0 kB is too small" in errors[0], p.stderr
    assert not (tmp_path / "x.json").exists()
