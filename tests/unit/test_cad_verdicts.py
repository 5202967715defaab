"""CAD on the tiny trained model: the three ground-truth controls get the right verdicts; JSON round trip;
mismatched models refused; `verify` exit codes through the real console script."""

import json
import subprocess
import sys

import pytest

from circuitforge.cad import CADResult, CADSettings, cad, erasure_edit, suppression_edit, unchanged_copy
from circuitforge.errors import CircuitForgeError
from circuitforge.models import save

SETTINGS = CADSettings(method="eap-ig", ig_steps=3, n_null=100)


@pytest.fixture(scope="module")
def cad_task(forget_task):
    return forget_task.head(16)


@pytest.fixture(scope="module")
def base_circuit(tiny_facts, cad_task):
    from circuitforge.circuits import minimal_circuit

    return minimal_circuit(tiny_facts, cad_task, faithfulness=0.8, method="eap-ig", ig_steps=3)


@pytest.fixture(scope="module")
def controls(tiny_facts, forget_task, cad_task, base_circuit):
    cut = tiny_facts.n_layers - 1
    return {
        "unchanged": unchanged_copy(tiny_facts),
        "suppression": suppression_edit(tiny_facts, forget_task),
        "erasure": erasure_edit(tiny_facts, sorted(base_circuit.nodes), upstream_of_layer=cut),
    }


@pytest.mark.parametrize("kind", ["unchanged", "suppression", "erasure"])
def test_controls_get_their_verdicts(kind, tiny_facts, cad_task, base_circuit, controls):
    r = cad(tiny_facts, controls[kind], cad_task, circuit=base_circuit, settings=SETTINGS)
    print(kind, r.verdict, f"mech z {r.z:.1f} value {r.value:.3f}; beh z {r.behavioural['z']:.1f}")
    assert r.verdict == kind
    if kind == "unchanged":
        assert r.value == pytest.approx(r.mechanistic_upstream["null_mean"], abs=5 * r.mechanistic_upstream["null_std"])
    if kind == "suppression":  # the readout edit leaves M1's layers exactly as they were
        assert all(e["change"] == pytest.approx(0.0, abs=1e-5) for e in r.edges)


def test_cad_json_round_trip(tiny_facts, cad_task, base_circuit, controls, tmp_path):
    r = cad(tiny_facts, controls["unchanged"], cad_task, circuit=base_circuit, settings=SETTINGS)
    r.to_json(str(tmp_path / "cad.json"))
    back = CADResult.from_dict(json.loads((tmp_path / "cad.json").read_text()))
    assert back.to_dict() == json.loads(json.dumps(r.to_dict()))


def test_mismatched_models_refused(tiny_facts, tiny_llama, cad_task):
    with pytest.raises(CircuitForgeError, match="architectures differ"):
        cad(tiny_facts, tiny_llama, cad_task, settings=SETTINGS)


def _verify(*args):
    return subprocess.run([sys.executable, "-c", "from circuitforge.cli import main; main()", "verify", *args],
                          capture_output=True, text=True, timeout=600)


def test_verify_exit_codes(tiny_facts, controls, tmp_path):
    folder = save(controls["erasure"], tmp_path / "erased")
    common = ["--base", "tiny-facts", "--forget", "tiny-facts:forget", "--retain", "tiny-facts:retain",
              "--cad-rows", "16", "--ig-steps", "3"]
    p = _verify(*common, "--unlearned", str(folder), "--json", str(tmp_path / "v.json"), "--html", str(tmp_path / "v.html"))
    assert p.returncode in (0, 1), p.stderr
    d = json.loads((tmp_path / "v.json").read_text())
    assert d["format"] == "circuitforge.verify/1"
    assert set(d["properties"]) == {"forgetting", "retain", "ptq_gap", "structural_erasure"}
    assert d["properties"]["ptq_gap"]["scheme"] == "nf4"
    assert d["cad"]["verdict"] == "erasure" and d["properties"]["structural_erasure"]["pass"]
    assert p.returncode == (0 if d["pass"] else 1)
    assert "plotly" in (tmp_path / "v.html").read_text()
    p = _verify(*common, "--unlearned", "tiny-llama")
    assert p.returncode == 2 and "architectures differ" in p.stderr
    p = _verify(*common, "--unlearned", str(folder), "--cad-z", "-1")
    assert p.returncode == 2
