"""`circuitforge demo --quick` runs the whole pipeline on the tiny trained model, prints the summary
table and writes a self-contained report, the JSON summary and the base circuit; it refuses to
overwrite a non-empty folder with a one-line error and exit code 2."""

import json
import subprocess
import sys

import pytest

from circuitforge.circuits import Circuit

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "circuitforge", *args], capture_output=True, text=True, timeout=900)


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    p = _cli("demo", "--quick", "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "mansu" in p.stdout and "ga" in p.stdout and "report:" in p.stdout + p.stderr
    s = json.loads((out / "demo.json").read_text())
    assert s["format"] == "circuitforge.demo/1" and s["quick"] is True
    assert set(s["methods"]) == {"mansu", "ga"}
    for m in s["methods"].values():
        assert 0.0 <= m["accuracy"]["forget"] <= 1.0 and 0.0 <= m["accuracy"]["forget_nf4"] <= 1.0
        assert m["cad"]["verdict"] in {"erasure", "suppression", "unchanged"}
        assert set(m["scorecard"]["properties"]) == {"forgetting", "retain", "ptq_gap", "structural_erasure"}
    # the base model knows the facts, and the MANSU edit is measured to change NF4 codes
    assert s["base"]["accuracy"]["forget"] >= 0.9
    assert s["methods"]["mansu"]["code_flip_rate"] > 0.5
    html = (out / "report.html").read_text()
    assert html.count("<h2>") >= 8 and "plotly" in html and "<script src=\"http" not in html  # offline, self-contained
    c = Circuit.from_json(out / "circuit.json")
    assert c.n_edges == s["circuit"]["edges"]

    again = _cli("demo", "--quick", "--out", str(out))
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1 and "--overwrite" in again.stderr
