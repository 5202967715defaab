"""``--device`` and ``--dtype`` on every command that loads a model, run on the CPU: bfloat16 gives the same
answers as float32 on the tiny trained model (its weights hash differs, so float32 artefacts are not reused
for it); an unavailable device or an unknown dtype is one line and exit 2, before anything is loaded."""

import json

import pytest
import typer.main
from _cli import run_cli as cli

from circuitforge.cli import app

LOADING = {"attribute", "circuit", "eval", "quant-check", "quant-diff", "unlearn", "verify", "demo", "bench",
           "models fetch", "models info"}




def _commands() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    out = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        for sub_name, sub in (subs.items() if subs else [(None, cmd)]):
            opts = {o for p in sub.params for o in p.opts}
            out[f"{name} {sub_name}" if sub_name else name] = opts
    return out


def test_every_model_loading_command_has_device_and_dtype():
    cmds = _commands()
    assert LOADING <= set(cmds), set(cmds)
    for name in LOADING:
        assert {"--device", "--dtype"} <= cmds[name], name


def test_bfloat16_on_cpu_answers_like_float32(capsys, tmp_path):
    code, o32, err = cli(capsys, "models", "info", "tiny-facts", "--json", "-")
    assert code == 0, err
    code, o16, err = cli(capsys, "models", "info", "tiny-facts", "--dtype", "bfloat16", "--json", "-")
    assert code == 0, err
    i32 = json.loads(o32[o32.index("{"):])
    i16 = json.loads(o16[o16.index("{"):])
    assert i32["dtype"] == "float32" and i16["dtype"] == "bfloat16" and i16["device"] == "cpu"
    assert i16["sha256"] != i32["sha256"] and i16["n_params"] == i32["n_params"]
    res = {}
    for dt in ("float32", "bfloat16"):
        code, _, err = cli(capsys, "eval", "--model", "tiny-facts", "--task", "tiny-facts:forget", "--dtype", dt,
                           "--json", str(tmp_path / f"{dt}.json"))
        assert code == 0, err
        res[dt] = json.loads((tmp_path / f"{dt}.json").read_text())
    assert res["bfloat16"]["accuracy"] == res["float32"]["accuracy"] == 1.0
    assert abs(res["bfloat16"]["mean_answer_logprob"] - res["float32"]["mean_answer_logprob"]) < 0.05


def test_attribution_and_verify_in_bfloat16(capsys, tmp_path):
    import torch

    graphs = {}
    for dt in ("float32", "bfloat16"):
        code, _, err = cli(capsys, "attribute", "--model", "tiny-facts", "--task", "tiny-facts:forget", "--dtype", dt,
                           "--out", str(tmp_path / f"g-{dt}.json"))
        assert code == 0, err
        d = json.loads((tmp_path / f"g-{dt}.json").read_text())
        graphs[dt] = torch.tensor([n["score"] for n in d["nodes"]])
    r = torch.corrcoef(torch.stack([graphs["float32"], graphs["bfloat16"]]))[0, 1]
    assert float(r) > 0.99
    code, _, err = cli(capsys, "verify", "--base", "tiny-facts", "--unlearned", "tiny-facts", "--forget",
                       "tiny-facts:forget", "--retain", "tiny-facts:retain", "--cad-rows", "8", "--ig-steps", "2",
                       "--dtype", "bfloat16", "--no-relearn", "--json", str(tmp_path / "v.json"))
    v = json.loads((tmp_path / "v.json").read_text())
    assert code == 1 and v["properties"]["forgetting"]["value"] == 0.0   # an unchanged model forgot nothing


@pytest.mark.parametrize(("args", "message"), [
    (["--device", "cuda:0"], "not available on this machine"),
    (["--device", "gpu"], "not a torch device"),
    (["--dtype", "int8"], "dtype must be one of"),
])
def test_bad_device_or_dtype_is_one_line(capsys, args, message):
    for cmd in (["eval", "--model", "tiny-facts", "--task", "tiny-facts:forget"],
                ["demo", "--quick", "--out", "/nonexistent/never-written"]):
        code, _, err = cli(capsys, *cmd, *args)
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
