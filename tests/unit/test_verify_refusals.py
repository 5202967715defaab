"""``circuitforge verify`` on bad input: exit 2 and exactly one ``error:`` line; custom code never imported;
exit 1 (not 0, not 2) on an unlearned model that forgot nothing. Tiny trained model, CLI run in-process."""

import json
import shutil

import pytest
import torch
from _cli import one_error_line
from _cli import run_cli as cli

from circuitforge.circuits import Circuit
from circuitforge.models import save

BASE = ["--base", "tiny-facts", "--forget", "tiny-facts:forget", "--retain", "tiny-facts:retain"]






@pytest.fixture(scope="module")
def copy_dir(tmp_path_factory, tiny_facts):
    """A saved, unchanged copy of the tiny trained model (the 'unlearned' model of several tests)."""
    return save(tiny_facts, tmp_path_factory.mktemp("unchanged") / "model")


def _variant(copy_dir, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(copy_dir, dst)
    return dst


def test_malformed_circuit_json(capsys, copy_dir, tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"format": "circuitforge.circuit/1", "edges": [{"dst": "logits", "score": 1.0}]}))
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--circuit", str(bad))
    assert code == 2
    assert "edge 1 needs string fields 'src' and 'dst'" in one_error_line(err)
    bad.write_text("[1, 2")
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--circuit", str(bad))
    assert code == 2 and "invalid JSON" in one_error_line(err)


def test_circuit_from_other_model_or_rows(capsys, copy_dir, tmp_path, tiny_facts, forget_task):
    rows = forget_task.head(8)
    good = Circuit(edges=["m0->logits"], model={"sha256": tiny_facts.sha256}, task=rows.identity(),
                   method={"name": "eap-ig", "ig_steps": 5})
    other_model = Circuit(edges=good.edges, model={"sha256": "0" * 64}, task=good.task, method=good.method)
    other_rows = Circuit(edges=good.edges, model=good.model, task=forget_task.head(9).identity(), method=good.method)
    for c, needle in ((other_model, "found on other weights"), (other_rows, "found on other rows")):
        path = tmp_path / "c.json"
        c.to_json(path)
        code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--circuit", str(path),
                           "--cad-rows", "8")
        assert code == 2 and needle in one_error_line(err), err


def test_non_finite_weights(capsys, copy_dir, tmp_path, fresh):
    h = fresh(str(copy_dir))
    with torch.no_grad():
        next(p for n, p in h.hf.named_parameters() if "mlp" in n)[0, 0] = float("nan")
    folder = save(h, tmp_path / "nan")
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(folder))
    assert code == 2 and "non-finite (NaN/Inf) weights" in one_error_line(err)


def test_mismatched_tokenizer(capsys, copy_dir, tmp_path):
    folder = _variant(copy_dir, tmp_path, "tok")
    tj = json.loads((folder / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = list(vocab)[4:6]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(folder))
    assert code == 2 and "tokenizers differ" in one_error_line(err)


def test_cad_rows_without_corrupt_prompt(capsys, copy_dir, tmp_path):
    rows = tmp_path / "plain.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"fact {i} is", "answer": " x"}) + "\n" for i in range(8)))
    code, _, err = cli(capsys, "verify", "--base", "tiny-facts", "--unlearned", str(copy_dir),
                       "--forget", str(rows), "--retain", "tiny-facts:retain", "--cad-rows", "8")
    assert code == 2 and "has no corrupt_prompt" in one_error_line(err)


def test_empty_task_file(capsys, copy_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, _, err = cli(capsys, "verify", "--base", "tiny-facts", "--unlearned", str(copy_dir),
                       "--forget", str(empty), "--retain", "tiny-facts:retain")
    assert code == 2 and "empty.jsonl" in one_error_line(err)


def test_custom_code_is_not_imported_and_long_prompts_refused(capsys, copy_dir, tmp_path):
    folder = _variant(copy_dir, tmp_path, "custom")
    marker = tmp_path / "IMPORTED"
    code = f"open({str(marker)!r}, 'w').write('x')\nclass EvilForCausalLM: pass\nclass EvilTokenizer: pass\n"
    (folder / "modeling_evil.py").write_text(code)
    (folder / "tokenization_evil.py").write_text(code)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "the " * 100 + "capital of", "answer": " x",
                                "corrupt_prompt": "the " * 100 + "capital of", "corrupt_answer": " y"}) + "\n")
    code_, _, err = cli(capsys, "verify", "--base", "tiny-facts", "--unlearned", str(folder),
                        "--forget", str(long), "--retain", "tiny-facts:retain")
    assert not marker.exists(), "custom code shipped in the checkpoint was imported"
    assert "ships custom code" in err
    assert code_ == 2 and "longer than" in one_error_line(err) and "context of 64 tokens" in err


def test_unchanged_copy_fails_with_exit_1(capsys, copy_dir, tmp_path):
    out = tmp_path / "v.json"
    ref = tmp_path / "base_reference.json"
    args = ("verify", *BASE, "--unlearned", str(copy_dir), "--cad-rows", "8", "--ig-steps", "2",
            "--base-reference", str(ref), "--no-relearn")
    code, stdout, err = cli(capsys, *args, "--json", str(out))
    assert code == 1, err
    d = json.loads(out.read_text())
    f = d["properties"]["forgetting"]
    assert d["pass"] is False and f["pass"] is False and f["value"] == 0.0 and f["call"] == "fail"
    assert f["ci"] == [0.0, 0.0] and f["direction"] == ">=" and f["n"] == 48
    assert "FAIL" in stdout
    # the base reference was written; a second run reads it and reports the same numbers
    assert json.loads(ref.read_text())["format"] == "circuitforge.base_reference/1" and "written to" in err
    code2, _, err2 = cli(capsys, *args, "--json", str(tmp_path / "v2.json"))
    d2 = json.loads((tmp_path / "v2.json").read_text())
    assert code2 == 1 and "read from and written to" in err2
    assert d2["properties"] == d["properties"] and d2["accuracies"] == d["accuracies"]


def test_malformed_base_reference(capsys, copy_dir, tmp_path):
    bad = tmp_path / "ref.json"
    bad.write_text('{"format": "circuitforge.circuit/1"}')
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--base-reference", str(bad))
    assert code == 2 and "not a circuitforge.base_reference/1" in one_error_line(err)
    assert bad.read_text() == '{"format": "circuitforge.circuit/1"}'


def test_unlearn_refuses_a_circuit_from_other_weights_or_rows(capsys, tmp_path, tiny_facts, forget_task):
    rows = forget_task.head(8)
    for model, task, needle in (({"sha256": "0" * 64}, rows.identity(), "other weights"),
                                ({"sha256": tiny_facts.sha256}, forget_task.head(9).subset(range(1, 9)).identity(),
                                 "other rows")):
        path = tmp_path / "c.json"
        Circuit(edges=["m0->logits"], model=model, task=task, method={"name": "eap"}).to_json(path)
        code, _, err = cli(capsys, "unlearn", "--model", "tiny-facts", "--forget", "tiny-facts:forget", "--retain",
                           "tiny-facts:retain", "--method", "mansu", "--circuit", str(path), "--out", str(tmp_path / "o"))
        assert code == 2 and needle in one_error_line(err), err


def test_verify_relearn_reports_the_attack(capsys, copy_dir, tmp_path):
    out = tmp_path / "v.json"
    code, stdout, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--cad-rows", "8", "--ig-steps", "2",
                            "--relearn", "--relearn-lr", "1e-3", "--json", str(out))
    assert code == 1, err
    rl = json.loads(out.read_text())["relearn"]
    assert rl["n_held"] > 0 and rl["train"]["n"] + rl["n_held"] == 48 and rl["settings"]["lr"] == 1e-3
    # an unchanged copy forgot nothing: the base model's curve is its own, so there may be nothing to recover
    assert "relearning: recovery" in stdout and "held rows" in stdout
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--relearn", "--relearn-lr", "-1")
    assert code == 2 and "--relearn-lr" in one_error_line(err)
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--no-relearn", "--max-relearn", "0.5")
    assert code == 2 and "--max-relearn needs the relearning attack" in one_error_line(err)
    code, _, err = cli(capsys, "verify", *BASE, "--unlearned", str(copy_dir), "--max-relearn", "-0.1")
    assert code == 2 and "--max-relearn must be ≥ 0" in one_error_line(err)


def test_the_relearning_gate_is_on_by_default(capsys, tiny_facts, tmp_path):
    """Without any relearning option verify runs the attack and gates on recovery ≤ 0.5: a first-block gradient
    ascent that the attack (lr 1e-3) brings back (0.81 of the base model's curve, seed 0) fails the gate and
    the run; ``--max-relearn inf`` reports the same attack without gating, so the exit code is the four
    properties' alone; ``--no-relearn`` runs no attack."""
    from circuitforge.cad.controls import early_ascent
    from circuitforge.data import load_task

    folder = save(early_ascent(tiny_facts, load_task("tiny-facts:forget")), tmp_path / "early")
    args = ("verify", *BASE, "--unlearned", str(folder), "--cad-rows", "8", "--ig-steps", "2", "--relearn-lr", "1e-3",
            "--base-reference", str(tmp_path / "ref.json"))
    code, stdout, err = cli(capsys, *args, "--json", str(tmp_path / "gated.json"))
    d = json.loads((tmp_path / "gated.json").read_text())
    rl = d["relearn"]
    assert rl["threshold"] == 0.5 and rl["recovery"] > 0.5 and rl["pass"] is False, rl
    assert d["pass"] is False and code == 1 and "relearning recovery ≤ 0.50: FAIL" in stdout
    code2, stdout2, _ = cli(capsys, *args, "--max-relearn", "inf", "--json", str(tmp_path / "report.json"))
    d2 = json.loads((tmp_path / "report.json").read_text())
    assert "pass" not in d2["relearn"] and d2["relearn"]["recovery"] == pytest.approx(rl["recovery"])
    assert d2["pass"] == all(p["pass"] for p in d2["properties"].values()) and code2 == (0 if d2["pass"] else 1)
    assert "relearning recovery ≤" not in stdout2
    code3, _, _ = cli(capsys, *args, "--no-relearn", "--json", str(tmp_path / "none.json"))
    assert json.loads((tmp_path / "none.json").read_text())["relearn"] is None


def test_default_attack_skipped_when_the_rows_do_not_split():
    """The default attack needs two groups of facts; rows that share one answer form one group, so the
    default run skips it and says why (an explicit ``--relearn`` raises instead: assess's error)."""
    from circuitforge.cli.verify import relearn_skip_reason, verdict_notes
    from circuitforge.data import load_task

    f = load_task("tiny-facts:forget")
    assert relearn_skip_reason(f) is None
    one = f.subset([0], name="one row")
    why = relearn_skip_reason(one)
    assert why and verdict_notes("indeterminate", None, why) == [f"relearning attack not run: {why}"]


def test_max_relearn_turns_the_attack_into_a_gate():
    """The gate's rule on hand-made attack results (the CLI sets ``pass`` and ANDs it into the exit code)."""
    from circuitforge.eval.relearn import relearn_gate

    assert relearn_gate({"recovery": 0.95}, 0.5) is False
    assert relearn_gate({"recovery": 0.2}, 0.5) is True
    assert relearn_gate({"recovery": None}, 0.5) is True   # nothing forgotten: forgetting fails instead


def test_max_relearn_call_comes_from_the_ci():
    """The gate's pass / fail / undecided from the recovery CI, as the four properties are judged: the
    GradDiff checkpoint of docs/verify.md (0.95 [0.86, 1.07]) fails a 0.5 gate, a CI straddling it is
    undecided whatever the point estimate says."""
    from circuitforge.eval.relearn import relearn_call

    assert relearn_call({"recovery": 0.95, "ci": [0.86, 1.07], "n_held": 64}, 0.5) == "fail"
    assert relearn_call({"recovery": 0.45, "ci": [0.30, 0.62], "n_held": 24}, 0.5) == "undecided"
    assert relearn_call({"recovery": 0.55, "ci": [0.42, 0.66], "n_held": 24}, 0.5) == "undecided"
    assert relearn_call({"recovery": 0.10, "ci": [-0.05, 0.31], "n_held": 24}, 0.5) == "pass"
    assert relearn_call({"recovery": 0.10, "n_held": 24}, 0.5) == "undecided"   # no CI: nothing decided
    assert relearn_call({"recovery": None}, 0.5) == "pass"


def test_erasure_verdict_carries_its_caveat():
    """An `erasure` verdict without the relearning attack points to it (the verdict has not predicted relearning
    out of sample); with the attack, the note appears only when the attack's CI lies above 0; other verdicts
    carry no note."""
    from circuitforge.cli.verify import verdict_notes

    assert "without the relearning attack" in verdict_notes("erasure", None)[0]
    assert "not gone from the weights" in verdict_notes("erasure", {"recovery": 0.7, "ci": [0.4, 0.9]})[0]
    assert verdict_notes("erasure", {"recovery": 0.05, "ci": [-0.1, 0.2]}) == []
    assert verdict_notes("erasure", {"recovery": None}) == []
    assert verdict_notes("suppression", None) == [] and verdict_notes("indeterminate", None) == []


def test_cli_default_gate_is_the_library_default():
    """The CLI restates the gate's default for a torch-free ``--help``; it must equal the library's."""
    from circuitforge.cli.verify import DEFAULT_MAX_RELEARN as cli_default
    from circuitforge.eval.relearn import DEFAULT_MAX_RELEARN

    assert cli_default == DEFAULT_MAX_RELEARN
