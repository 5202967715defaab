"""``circuitforge unlearn``: checkpoint + manifest, refusing an existing folder, bad input → exit 2; a run
that stops before its forget target or changes nothing says so in one line and exits 1; the saved
checkpoint reloads and ``verify`` accepts it."""

import json
import subprocess
import sys

import pytest

ARGS = ["unlearn", "--model", "tiny-facts", "--forget", "tiny-facts:forget", "--retain", "tiny-facts:retain"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "circuitforge", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("unlearn") / "mansu"
    p = cli(*ARGS, "--method", "mansu", "--set", "circuit_nodes=a0.h0,m3", "--set", "max_steps=1",
            "--seed", "2", "--out", str(out))
    # one step of a two-component circuit does not reach the forget target: exit 1, one line, checkpoint kept
    assert p.returncode == 1, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("unlearn: FAILED")]
    assert len(lines) == 1, p.stderr
    assert "stop reason max_steps" in lines[0] and "forget acc" in lines[0] and "retain acc" in lines[0]
    return out


def test_outcome_line_only_for_runs_that_fail():
    from types import SimpleNamespace

    from circuitforge.cli.surgery import outcome_line

    def res(stop: str, n: int):
        return SimpleNamespace(method="ga", stop_reason=stop, mask_stats={"n_changed": n},
                               settings={"target_forget_acc": 0.25},
                               diagnostics={"final": {"forget_acc": 0.5, "retain_acc": 0.9}})

    assert outcome_line(res("forget_target_reached", 10)) is None
    line = outcome_line(res("retain_budget_spent", 0))
    assert line is not None and "changed no weights" in line and "retain_budget_spent" in line and "\n" not in line
    assert "stopped before its forget target" in str(outcome_line(res("max_steps", 5)))
    assert "forget acc 0.500 (target <= 0.250)" in str(outcome_line(res("max_steps", 5)))


def test_cli_writes_checkpoint_and_manifest(ckpt):
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    man = json.loads((ckpt / "circuitforge.json").read_text())
    u = man["unlearn"]
    assert u["format"] == "circuitforge.unlearn/1" and u["method"] == "mansu" and u["seed"] == 2
    assert u["settings"]["circuit_nodes"] == ["a0.h0", "m3"] and u["settings"]["max_steps"] == 1
    assert u["base"]["spec"] == "tiny-facts" and len(u["base"]["sha256"]) == 64
    assert u["edited_parameters"]["n_changed"] > 0
    assert u["edited_parameters"]["n_changed_outside_mask"] == 0
    assert man["model"]["sha256"] == u["edited"]["sha256"] != u["base"]["sha256"]


def test_cli_refuses_existing_folder_and_bad_input(ckpt, tmp_path):
    p = cli(*ARGS, "--method", "ga", "--out", str(ckpt))
    assert p.returncode == 2 and "already exists" in p.stderr
    assert cli(*ARGS, "--method", "fancy", "--out", str(tmp_path / "x")).returncode == 2
    p = cli(*ARGS, "--method", "ga", "--set", "lr=-1", "--out", str(tmp_path / "y"))
    assert p.returncode == 2 and "lr must be > 0" in p.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_checkpoint_reloads_and_verify_accepts_it(ckpt, tiny_facts, forget_task, retain_task):
    from circuitforge.cad import CADSettings
    from circuitforge.eval import verify
    from circuitforge.models import load

    back = load(str(ckpt))
    man = json.loads((ckpt / "circuitforge.json").read_text())
    assert back.sha256 == man["unlearn"]["edited"]["sha256"]
    card, _ = verify(tiny_facts, back, forget_task, retain_task, cad_rows=8,
                     cad_settings=CADSettings(method="eap", n_null=20))
    d = card.to_dict()
    assert d["format"] == "circuitforge.verify/1"
    assert d["unlearned"]["sha256"] == back.sha256
    assert set(d["properties"]) >= {"forgetting", "retain", "ptq_gap", "structural_erasure"}
