"""`circuitforge verify` end to end on Gemma 3 270M (issue 15), on its built-in slice.

The checkpoint under test is a known-label control: the readout edit (:func:`circuitforge.cad.suppression_edit`,
the answers' unembedding rows projected off the clean−corrupt directions) saved as a safetensors folder. It
changes nothing upstream of the unembedding, so M₀'s readout reads every answer back out of M₁'s residual
stream: whatever else CAD says, it must not call this edit ``erasure``. Gemma 3 runs the hooked hybrid path
(sliding-window layers), its tied 262k-token embedding is untied by the edit, and its circuit is searched
on the slice's rows: the whole pipeline on a second family.
"""

import json

import pytest
from typer.testing import CliRunner

from circuitforge.cad import suppression_edit
from circuitforge.cli import app
from circuitforge.data import evaluate, load_task
from circuitforge.models import load, save

pytestmark = pytest.mark.slow

ROWS = 8


def test_verify_gemma3_readout_edit_end_to_end(tmp_path):
    base = load("gemma3-270m")
    forget = load_task("builtin:gemma3-270m/forget").head(ROWS)
    retain = load_task("builtin:gemma3-270m/retain").head(16)
    assert evaluate(base, forget).accuracy == 1.0 and evaluate(base, retain).accuracy == 1.0  # the slice is known
    edited = suppression_edit(base, forget)
    assert evaluate(edited, forget).accuracy < 1.0   # the control does suppress something
    folder = tmp_path / "gemma-readout-edit"
    save(edited, folder)
    del edited
    out = tmp_path / "verify.json"
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(forget)))
    (tmp_path / "retain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(retain)))
    res = CliRunner().invoke(app, ["verify", "--base", "gemma3-270m", "--unlearned", str(folder),
                                   "--forget", str(tmp_path / "forget.jsonl"), "--retain", str(tmp_path / "retain.jsonl"),
                                   "--cad-rows", str(ROWS), "--method", "eap", "--no-relearn", "--json", str(out)])
    # --no-relearn: the default relearning attack (tested on the tiny model, tests/unit/test_verify_refusals.py)
    # took 185 s of this test's 978 s on a contended machine; the CAD verdict on Gemma 3 is what this test checks
    # 0 / 1 = verdict reached (pass / a property fails); CliRunner also reports an uncaught exception as 1
    assert res.exit_code in (0, 1) and (res.exception is None or isinstance(res.exception, SystemExit)), \
        (res.output, repr(res.exception))
    d = json.loads(out.read_text())
    assert d["format"] == "circuitforge.verify/1"
    assert set(d["properties"]) >= {"forgetting", "retain", "ptq_gap"}
    cad = d["cad"]
    assert cad["verdict"] in ("suppression", "unchanged", "indeterminate"), cad   # never erasure: a readout edit
    assert cad["hybrid_recovery_forget"] and len(cad["hybrid_recovery_forget"]) == len(cad["hybrid_layers"])
    print(f"gemma3-270m readout edit: verdict {cad['verdict']}, E {cad['erasure_score']:.2f}, "
          f"forget drop {d['properties']['forgetting']['value']:.2f}, {d['seconds']:.0f} s")


def _rows(task):
    return [{"prompt": it.prompt, "answer": it.answer, "distractors": list(it.distractors),
             "corrupt_prompt": it.corrupt_prompt, "corrupt_answer": it.corrupt_answer} for it in task.items]
