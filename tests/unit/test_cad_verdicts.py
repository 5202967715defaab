"""The verdict on known-label controls of the tiny trained model (forget = elements rows 0–15, retain =
same-domain rows 32–47), each able to fail: no control equals the benign null or the unchanged model by
construction except the identical copy, which checks rule 1 only. The late-ascent control is the
benchmark's ``late-ascent-no-retain`` recipe at a larger learning rate (fewer steps). JSON round trip; mismatched models
refused; `verify` exit codes through the real console script.

The retrain controls load cached models (``circuitforge.models.tiny.ensure_retrained`` and
``ensure_finetuned``; the first run trains them, about a minute each on 2 cores, the fine-tunes ~15 s)."""

import json
import subprocess
import sys

import pytest
import torch

from circuitforge.cad import (
    CADResult,
    CADSettings,
    block_ascent,
    cad,
    erasure_edit,
    late_ascent,
    matched_random_sign,
    subject_erasure,
    suppression_edit,
    unchanged_copy,
)
from circuitforge.cad.verdict import E_MIN
from circuitforge.errors import CircuitForgeError
from circuitforge.models import load, save
from circuitforge.models.tiny import ensure_finetuned, ensure_retrained

SETTINGS = CADSettings(method="eap-ig", ig_steps=3, n_null=100, n_benign=4, n_boot=400, hybrid_points=None)
FAST = CADSettings(n_benign=4, n_boot=400, hybrid_points=None, attribution=False)
ROWS = tuple(range(16))


@pytest.fixture(scope="module")
def cad_task(forget_task):
    return forget_task.head(16)


@pytest.fixture(scope="module")
def same_domain_retain(forget_task):
    return forget_task.subset(range(32, 48), "elements[32:48]")


@pytest.fixture(scope="module")
def base_circuit(tiny_facts, cad_task):
    from circuitforge.circuits import CircuitSearch

    return CircuitSearch(method="eap-ig", ig_steps=3, rows=None).find(tiny_facts, cad_task)


@pytest.fixture(scope="module")
def late(tiny_facts, cad_task):
    return late_ascent(tiny_facts, cad_task, layers=1, lr=2e-3)


def _cad(base, m, task, retain, **kw):
    """CAD with the presence lens fitted on the same-domain retain rows and the other-domain retain rows,
    as ``verify`` fits it on its retain and unrelated rows."""
    from circuitforge.data import load_task

    kw.setdefault("lens_rows", [retain, load_task("tiny-facts:retain")])
    return cad(base, m, task, retain=retain, settings=kw.pop("settings", FAST), **kw)


def test_identical_copy_is_unchanged(tiny_facts, cad_task, same_domain_retain):
    r = _cad(tiny_facts, unchanged_copy(tiny_facts), cad_task, same_domain_retain)
    assert r.verdict == "unchanged" and r.score == 0.0


def test_readout_edit_is_suppression(tiny_facts, cad_task, same_domain_retain):
    r = _cad(tiny_facts, suppression_edit(tiny_facts, cad_task), cad_task, same_domain_retain)
    assert r.evidence["own"] < 0.1                                   # it forgot at the output ...
    assert r.verdict == "suppression", r.evidence                    # ... but every hybrid recovers
    assert min(r.recovery["forget"]["recovery"]) > 0.99


def test_last_layer_ascent_is_suppression(tiny_facts, late, cad_task, same_domain_retain):
    sd0, sd1 = tiny_facts.state_dict(), late.state_dict()
    last = f"model.layers.{tiny_facts.n_layers - 1}."
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0 if not k.startswith(last))  # earlier layers bit-identical
    assert any(not torch.equal(sd0[k], sd1[k]) for k in sd0 if k.startswith(last))
    r = _cad(tiny_facts, late, cad_task, same_domain_retain)
    assert r.evidence["own"] < 0.5 and r.verdict == "suppression", r.evidence
    rf = r.recovery["forget"]["recovery"]
    assert all(x == pytest.approx(1.0, abs=1e-4) for x in rf[:-1]) and rf[-1] < 0.5


def test_benign_matched_edit_is_not_erasure(tiny_facts, late, cad_task, same_domain_retain):
    b = matched_random_sign(tiny_facts, late, seed=7)
    r = _cad(tiny_facts, b, cad_task, same_domain_retain)
    assert r.verdict != "erasure" and r.score < 0.1, r.evidence


def test_subject_erasure_is_erasure(tiny_facts, cad_task, same_domain_retain):
    r = _cad(tiny_facts, subject_erasure(tiny_facts, cad_task), cad_task, same_domain_retain)
    assert r.verdict == "erasure", r.evidence
    assert r.evidence["basis"] > 0.99                                 # retain rows untouched
    assert r.evidence["benign_percentile"] >= 0.95


def test_retrain_oracle_fails_the_basis_check(tiny_facts, cad_task, same_domain_retain):
    """The pitfall, measured: the fact world retrained without the forget rows, even from M₀'s own
    initialisation and batch-order seed, does not share M₀'s residual basis. Its retain hybrids fail as
    its forget hybrids do, so the verdict refuses (indeterminate) instead of calling it erasure."""
    oracle = load(str(ensure_retrained(ROWS, init_seed=0, order_seed=0)))
    r = _cad(tiny_facts, oracle, cad_task, same_domain_retain)
    assert r.recovery["retain"]["own"] > 0.8                          # the oracle knows the retain facts ...
    assert r.evidence["basis"] < 0.5                                  # ... but M₀ cannot read its residual
    assert r.verdict == "indeterminate", r.evidence


def test_same_data_retrain_on_other_seed_is_unchanged(tiny_facts, cad_task, same_domain_retain):
    other = load(str(ensure_retrained((), init_seed=1, order_seed=1)))
    r = _cad(tiny_facts, other, cad_task, same_domain_retain)
    assert r.verdict == "unchanged", r.evidence


@pytest.fixture(scope="module")
def finetuned():
    """M₀ of the pretrained-pair world: a fine-tune of a shared pretrained model that never saw rows 0–31."""
    return load(str(ensure_finetuned()))


def test_retain_model_oracle_fine_tuned_from_the_shared_pretrained_model_is_erasure(finetuned, cad_task, same_domain_retain):
    """The TOFU design: the oracle is the same pretrained model fine-tuned without the forget rows. It shares
    M₀'s basis through the pretrained weights (unlike the retrain from scratch above), so the hybrids can
    read it — and find the answers missing at every depth."""
    oracle = load(str(ensure_finetuned(ROWS)))
    r = _cad(finetuned, oracle, cad_task, same_domain_retain)
    assert r.evidence["basis"] > 0.9, r.evidence                     # M₀'s layers read the oracle's residual
    assert max(r.recovery["forget"]["recovery"]) < 0.3               # no depth hands M₀ the answer back
    assert r.verdict == "erasure", r.evidence


def test_last_layer_ascent_on_the_fine_tuned_model_is_suppression(finetuned, cad_task, same_domain_retain):
    """The same world, a known suppression: the verdict on this M₀ is not erasure for anything that forgot."""
    r = _cad(finetuned, late_ascent(finetuned, cad_task, layers=1, lr=2e-3), cad_task, same_domain_retain)
    assert r.evidence["own"] < 0.5 and r.verdict == "suppression", r.evidence


@pytest.fixture(scope="module")
def mid(finetuned, cad_task, forget_task, same_domain_retain):
    """Gradient ascent (with a retain term on rows 16–31) on block n/2 of the fine-tuned M₀ only: the
    validation's ``mid-ascent`` control, a gate after the answer is already in the residual."""
    keep = forget_task.subset(range(16, 32), "elements[16:32]")
    m = block_ascent(finetuned, cad_task, [finetuned.n_layers // 2], lr=5e-4, max_steps=300, retain=keep, tag="mid-ascent")
    return _cad(finetuned, m, cad_task, same_domain_retain)


def test_mid_depth_ascent_gates_an_answer_already_in_the_residual(finetuned, mid):
    """The construction of the control: M₁ forgot, and every hybrid cut at or below the edited block answers
    as M₀ does (the residual there is M₀'s), so the answer is still computed in M₁."""
    r = mid
    rec = r.recovery["forget"]["recovery"]
    half = finetuned.n_layers // 2
    assert r.evidence["own"] < 0.25, r.evidence
    assert all(abs(x - 1) < 1e-4 for x in rec[: half + 1]), rec
    assert max(rec[half + 1 :]) < 0.3, rec


def test_mid_depth_ascent_is_called_suppression(mid):
    """The erasure score counts the depth after a gate like the depth after an erasure (E above E_MIN
    here); answer presence sees that the answer M₀ writes is still written below the gate (rule 3). Under
    format cad/3, without presence, this verdict was erasure."""
    assert mid.evidence["erasure_score_ci"][0] > E_MIN, mid.evidence
    assert mid.verdict == "suppression", mid.evidence


def test_same_fine_tune_on_another_batch_order_is_unchanged(finetuned, cad_task, same_domain_retain):
    r = _cad(finetuned, load(str(ensure_finetuned((), order_seed=1))), cad_task, same_domain_retain)
    assert r.verdict == "unchanged", r.evidence


def test_cad_json_round_trip_and_paper_cad(tiny_facts, late, cad_task, same_domain_retain, base_circuit, tmp_path):
    r = _cad(tiny_facts, late, cad_task, same_domain_retain, circuit=base_circuit, settings=SETTINGS)
    assert r.value == r.value and r.edges and r.summary()["verdict"] == r.verdict
    r.to_json(str(tmp_path / "cad.json"))
    back = CADResult.from_dict(json.loads((tmp_path / "cad.json").read_text()))
    assert back.to_dict() == json.loads(json.dumps(r.to_dict()))
    for key in ("value", "z", "verdict", "erasure_score", "erasure_score_ci", "benign_percentile", "hybrid_recovery_forget"):
        assert key in r.summary()


def test_mismatched_models_refused(tiny_facts, tiny_llama, cad_task):
    with pytest.raises(CircuitForgeError, match="architectures differ"):
        cad(tiny_facts, tiny_llama, cad_task, settings=FAST)


def _verify(*args):
    return subprocess.run([sys.executable, "-c", "from circuitforge.cli import main; main()", "verify", *args],
                          capture_output=True, text=True, timeout=600)


def test_verify_exit_codes(tiny_facts, base_circuit, tmp_path):
    folder = save(erasure_edit(tiny_facts, sorted(base_circuit.nodes), upstream_of_layer=tiny_facts.n_layers - 1),
                  tmp_path / "erased")
    common = ["--base", "tiny-facts", "--forget", "tiny-facts:forget", "--retain", "tiny-facts:retain",
              "--cad-rows", "16", "--ig-steps", "3", "--no-relearn"]   # the attack: test_verify_refusals.py
    p = _verify(*common, "--unlearned", str(folder), "--json", str(tmp_path / "v.json"), "--html", str(tmp_path / "v.html"))
    assert p.returncode in (0, 1), p.stderr
    d = json.loads((tmp_path / "v.json").read_text())
    assert d["format"] == "circuitforge.verify/1"
    assert set(d["properties"]) == {"forgetting", "retain", "ptq_gap", "structural_erasure"}
    assert d["properties"]["ptq_gap"]["scheme"] == "nf4"
    assert d["cad"]["verdict"] in ("erasure", "suppression", "unchanged", "indeterminate")
    assert d["properties"]["structural_erasure"]["pass"] == (d["cad"]["verdict"] == "erasure")
    assert p.returncode == (0 if d["pass"] else 1)
    assert "plotly" in (tmp_path / "v.html").read_text()
    p = _verify(*common, "--unlearned", "tiny-llama")
    assert p.returncode == 2 and "architectures differ" in p.stderr
    p = _verify(*common, "--unlearned", str(folder), "--cad-z", "-1")
    assert p.returncode == 2


def test_matched_unrelated_finetune_is_benign_and_matched(tiny_facts, late, cad_task, same_domain_retain, retain_task):
    """The fine-tune null: same per-tensor count and norm as the edit, a trained direction (not the edit's),
    and it is not called erasure; cad() puts it in the null beside the random-sign edits."""
    from circuitforge.cad.benign import edit_stats, matched_finetune

    b = matched_finetune(tiny_facts, late, retain_task, steps=5, lr=1e-3, seed=1)
    want, got = edit_stats(tiny_facts, late), edit_stats(tiny_facts, b)
    assert got["changed"] <= want["changed"] and got["changed"] > 0.9 * want["changed"]
    assert got["l2"] == pytest.approx(want["l2"], rel=1e-3)
    sd0, sdl, sdb = tiny_facts.state_dict(), late.state_dict(), b.state_dict()
    k = f"model.layers.{tiny_facts.n_layers - 1}.mlp.down_proj.weight"
    dl, db = (sdl[k] - sd0[k]).flatten(), (sdb[k] - sd0[k]).flatten()
    assert float(torch.nn.functional.cosine_similarity(dl, db, dim=0)) < 0.9  # not the edit's direction
    r = _cad(tiny_facts, b, cad_task, same_domain_retain)
    assert r.verdict != "erasure" and r.score < 0.1, r.evidence
    r2 = cad(tiny_facts, late, cad_task, retain=same_domain_retain, unrelated=retain_task,
             settings=CADSettings(method="eap", n_null=20, n_benign=1, n_benign_finetune=1, n_boot=200,
                                  attribution=False))
    fin = r2.benign["finetune"]["erasure_scores"]
    assert len(fin) == 1 and len(r2.benign["erasure_scores"]) == 1 and r2.summary()["benign_finetune_erasure_scores"] == fin
    assert set(r2.timings) == {"hybrids", "presence", "benign_random_sign", "benign_finetune", "attribution"}   # no attribution run
    assert all(v >= 0 for v in r2.timings.values()) and sum(r2.timings.values()) <= r2.seconds + 1e-6
