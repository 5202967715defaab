"""The console script: `eval` JSON, `models info`, and exit code 2 with a one-line error on bad input."""

import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-c", "from circuitforge.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_eval_writes_json(tmp_path):
    out = tmp_path / "r.json"
    p = _run("eval", "--model", "tiny-facts", "--task", "tiny-facts:retain", "--json", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["accuracy"] == 1.0 and r["n"] == 48 and r["mean_answer_logprob"] < 0
    assert "accuracy 1.000" in p.stdout


def test_bad_input_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    p = _run("eval", "--model", "tiny-facts", "--task", str(bad))
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "row 1" in lines[0] and "answer" in lines[0]
    p = _run("models", "info", "/nonexistent/model/dir")
    assert p.returncode == 2 and "error: /nonexistent/model/dir: no such folder or file" in p.stderr


def test_models_info_json():
    p = _run("models", "info", "tiny-llama", "--json", "-")
    assert p.returncode == 0, p.stderr
    start = p.stdout.index("{")
    facts = json.loads(p.stdout[start:])
    assert facts["n_kv_heads"] == 2 and facts["family"] == "llama" and len(facts["sha256"]) == 64
