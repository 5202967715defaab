"""`circuitforge demo --quick` runs the whole pipeline on the tiny trained model, prints a progress line per
step (stdout and stderr redirected, as in a log), the summary table, and writes a self-contained report, the
JSON summary with its provenance, the base circuit and the CAD evidence; it refuses to overwrite a
non-empty folder with a one-line error and exit code 2."""

import json
import re
import subprocess
import sys
from pathlib import Path

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
    # one plain progress line per step, in pipeline order, with the elapsed time (not a terminal)
    steps = ["load", "circuit", "unlearn_mansu", "assess_mansu", "quant_mansu", "unlearn_ga", "assess_ga", "quant_ga"]
    lines = [ln for ln in p.stderr.splitlines() if re.match(r"\[ *\d+\.\d s\] \w+: ", ln)]
    firsts = [next(i for i, ln in enumerate(lines) if f"] {s}: " in ln) for s in steps]
    assert firsts == sorted(firsts), lines
    assert all(any(f"] {s}: done" in ln for ln in lines) for s in steps)
    s = json.loads((out / "demo.json").read_text())
    assert s["format"] == "circuitforge.demo/1" and s["quick"] is True
    assert set(s["methods"]) == {"mansu", "ga"}
    for m in s["methods"].values():
        assert 0.0 <= m["accuracy"]["forget"] <= 1.0 and 0.0 <= m["accuracy"]["forget_nf4"] <= 1.0
        assert m["cad"]["verdict"] in {"erasure", "suppression", "unchanged", "indeterminate"}
        assert m["hyperparameters"] and "ci" in m["scorecard"]["properties"]["forgetting"]
        assert set(m["scorecard"]["properties"]) == {"forgetting", "retain", "ptq_gap", "structural_erasure"}
    # the base model knows the facts, and the MANSU edit is measured to change NF4 codes
    assert s["base"]["accuracy"]["forget"] >= 0.9
    assert s["methods"]["mansu"]["code_flip_rate"] > 0.5
    html = (out / "report.html").read_text()
    assert html.count("<h2>") >= 8 and "plotly" in html and "<script src=\"http" not in html  # offline, self-contained
    assert s["date"] and s["versions"]["circuitforge"] and s["dtype"] == "float32" and s["device"] == "cpu"
    assert s["circuit"]["search"]["method"] == "eap-ig" and s["tasks"]["forget"]["n"] == 48
    for f in ("demo.json", "circuit.json", "cad-mansu.json", "report.html"):  # no local paths in any output
        text = (out / f).read_text()
        assert str(tmp_path) not in text and str(Path.home()) not in text, f
    c = Circuit.from_json(out / "circuit.json")
    assert c.n_edges == s["circuit"]["edges"]

    again = _cli("demo", "--quick", "--out", str(out))
    assert again.returncode == 2
    assert len(again.stderr.strip().splitlines()) == 1 and "--overwrite" in again.stderr
