"""Edit diagnostics, survival table and the CLI (tier: unit, tiny models)."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from circuitforge.quant import (
    code_index,
    diff_report,
    quantized_copy,
    quantized_linear_names,
    recovery_ratio,
    survival,
)
from circuitforge.quant.codebook import sorted_codebook


def _random_edit(handle, share: float, scale: float, seed: int):
    """Perturb a random ``share`` of every parameter by N(0, scale); returns the edited copy."""
    from circuitforge.quant.routes import copy_handle

    out = copy_handle(handle, spec=handle.spec + "@edit")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.named_parameters().values():
            mask = torch.rand(p.shape, generator=g) < share
            p.add_(torch.randn(p.shape, generator=g) * scale * mask)
    out.invalidate_identity()
    return out


def _brute_flips(w0: torch.Tensor, w1: torch.Tensor) -> tuple[int, int]:
    """(changed, flipped) by explicit nearest-code search per block, each side with its own absmax."""
    c = sorted_codebook("nf4")[0]

    def codes(w):
        blocks = w.reshape(-1, 64)
        a = blocks.abs().amax(dim=1, keepdim=True)
        return (blocks / a)[..., None].sub(c).abs().argmin(dim=-1)

    changed = (w1 != w0).reshape(-1, 64)
    return int(changed.sum()), int(((codes(w0) != codes(w1)) & changed).sum())


def test_code_flip_rate_matches_brute_force(tiny_llama):
    edited = _random_edit(tiny_llama, share=0.3, scale=2e-3, seed=1)
    rep = diff_report(tiny_llama, edited)
    p0, p1 = tiny_llama.named_parameters(), edited.named_parameters()
    changed = flipped = total = 0
    for name in quantized_linear_names(tiny_llama):
        ch, fl = _brute_flips(p0[name].detach(), p1[name].detach())
        changed, flipped, total = changed + ch, flipped + fl, total + p0[name].numel()
    assert rep["n_changed"] == changed and rep["n_code_flips"] == flipped and rep["n_params"] == total
    assert rep["code_flip_rate"] == pytest.approx(flipped / changed)
    assert rep["changed_share"] == pytest.approx(changed / total)
    assert 0.25 < rep["changed_share"] < 0.35 and 0 < rep["code_flip_rate"] < 1
    assert rep["n_absmax_changed_blocks"] > 0
    json.dumps(rep)  # serialisable


def test_ratio_is_bin_width_over_update(tiny_llama):
    edited = _random_edit(tiny_llama, share=0.05, scale=1e-4, seed=2)
    rep = diff_report(tiny_llama, edited)
    name = quantized_linear_names(tiny_llama)[0]
    w0 = tiny_llama.named_parameters()[name].detach()
    w1 = edited.named_parameters()[name].detach()
    from circuitforge.quant import bin_width

    ch = w1 != w0
    r = (bin_width(w0)[ch] / (w1 - w0)[ch].abs()).double()
    assert rep["tensors"][name]["binwidth_to_update_ratio"]["median"] == pytest.approx(float(r.median()), rel=0.05)
    assert rep["median_binwidth_to_update_ratio"] > 1  # tiny updates sit deep inside their bins


def test_no_change_and_quantized_edit(tiny_llama):
    same = diff_report(tiny_llama, tiny_llama)
    assert same["n_changed"] == 0 and same["median_binwidth_to_update_ratio"] is None and same["code_flip_rate"] == 0
    # an edit that *is* the NF4 round trip keeps every code (dequantized values re-quantize to themselves)
    q = quantized_copy(tiny_llama, "nf4", backend="torch")
    rep = diff_report(tiny_llama, q)
    name = quantized_linear_names(tiny_llama)[0]
    i0 = code_index(tiny_llama.named_parameters()[name].detach())[0]
    i1 = code_index(q.named_parameters()[name].detach())[0]
    assert torch.equal(i0, i1) and rep["tensors"][name]["n_code_flips"] == 0


def test_recovery_ratio_is_none_safe():
    r, note = recovery_ratio(0.5, 0.2, 0.2)
    assert r is None and note and "equal" in note
    r, note = recovery_ratio(0.5, 0.25, 0.75)
    assert r == pytest.approx(0.5) and note is None


def test_survival_table(tiny_facts, forget_task, retain_task):
    edited = _random_edit(tiny_facts, share=1.0, scale=0.05, seed=3)
    rep = survival(tiny_facts, edited, forget_task, retain_task, schemes=("nf4", "fp4"))
    fp = rep["fp"]["edited"]["forget_acc"]
    for label in ("nf4", "fp4"):
        row = rep["schemes"][label]
        assert row["ptq_gap"] == pytest.approx(row["edited"]["forget_acc"] - fp)
        if row["recovery_ratio"] is None:
            assert rep["fp"]["base"]["forget_acc"] == fp and row["recovery_ratio_note"]
        else:
            assert math.isfinite(row["recovery_ratio"])
    assert rep["ptq_gap"].keys() == {"nf4", "fp4"}
    json.dumps(rep)


def test_cli_quant_diff_and_refusal(tmp_path, tiny_llama):
    from circuitforge.cli import app
    from circuitforge.models import save

    edited = _random_edit(tiny_llama, share=0.2, scale=1e-3, seed=4)
    folder = save(edited, tmp_path / "edited")
    runner = CliRunner()
    res = runner.invoke(app, ["quant-diff", "--base", "tiny-llama", "--model", str(folder),
                              "--json", str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "d.json").read_text())
    for key in ("median_binwidth_to_update_ratio", "code_flip_rate", "changed_share"):
        assert isinstance(rep[key], float)
    assert rep["changed_share"] == pytest.approx(diff_report(tiny_llama, edited)["changed_share"])
    bad = runner.invoke(app, ["quant-diff", "--base", "tiny-llama", "--model", "tiny-gpt2"])
    assert bad.exit_code != 0


def test_cli_exit_code_2_on_mismatch():
    import subprocess
    import sys

    code = "from circuitforge.cli import main; main()"
    for cmd in (["quant-diff", "--base", "tiny-llama", "--model", "tiny-gpt2"],
                ["quant-check", "--base", "tiny-llama", "--model", "tiny-gpt2", "--forget", "tiny-facts:forget",
                 "--retain", "tiny-facts:retain"]):
        r = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=False)
        assert r.returncode == 2, r.stderr
        assert "differ" in r.stderr


def test_cli_quant_check_json(tmp_path):
    from circuitforge.cli import app

    res = CliRunner().invoke(app, ["quant-check", "--base", "tiny-facts", "--model", "tiny-facts", "--forget",
                                   "tiny-facts:forget", "--retain", "tiny-facts:retain", "--scheme", "nf4",
                                   "--scheme", "int8", "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "s.json").read_text())
    assert set(rep["schemes"]) == {"nf4", "int8"} and rep["schemes"]["nf4"]["recovery_ratio"] is None


def test_an_edit_that_unties_the_unembedding_is_compatible(tiny_facts):
    """A readout edit unties the tied unembedding (one more tensor, the embedding's shape): still the same
    architecture, so the diagnostics (and verify) accept it either way round; a real shape change is refused."""
    from circuitforge.cad.controls import untie_unembedding
    from circuitforge.errors import CircuitForgeError
    from circuitforge.models import clone
    from circuitforge.quant.diagnostics import check_compatible

    untied = clone(tiny_facts)
    untie_unembedding(untied)
    assert "lm_head.weight" in untied.named_parameters() and "lm_head.weight" not in tiny_facts.named_parameters()
    check_compatible(tiny_facts, untied)
    check_compatible(untied, tiny_facts)
    assert diff_report(tiny_facts, untied)["n_changed"] == 0
    wider = clone(tiny_facts)
    with torch.no_grad():
        wider.hf.model.norm.weight = torch.nn.Parameter(torch.ones(wider.d_model + 1))
    with pytest.raises(CircuitForgeError, match="differ"):
        check_compatible(tiny_facts, wider)
