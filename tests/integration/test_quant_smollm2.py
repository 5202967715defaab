"""SmolLM2-135M: a 12-step gradient-ascent edit and its NF4 diagnostics through ``quant-diff``; route (a) vs
route (b) on the real model (tier: integration, loads SmolLM2)."""

import json

import pytest
import torch
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

# hand-written cloze facts (until the edit baselines land in circuitforge.surgery)
FACTS = [
    ("The capital of France is", " Paris"),
    ("The capital of Germany is", " Berlin"),
    ("The capital of Italy is", " Rome"),
    ("The capital of Japan is", " Tokyo"),
    ("The capital of Spain is", " Madrid"),
]


def gradient_ascent(handle, facts, steps: int = 12, lr: float = 1e-5):
    """Adam on −NLL of the answers (i.e. ascend the loss), all parameters, a copy; returns the copy."""
    from circuitforge.data.scoring import encode, pad_batch
    from circuitforge.quant.routes import copy_handle

    edited = copy_handle(handle, spec=handle.spec + "@ga12")
    enc = [encode(edited, p, a) for p, a in facts]
    toks = pad_batch([e[0] for e in enc])
    params = list(edited.hf.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    torch.manual_seed(0)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        logp = torch.log_softmax(edited.logits(toks), dim=-1)
        nll = torch.stack([
            -logp[i, n - 1 : len(ids) - 1].gather(1, torch.tensor(ids[n:])[:, None]).sum() for i, (ids, n) in enumerate(enc)
        ]).mean()
        (-nll).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    for p in params:
        p.requires_grad_(True)
    edited.invalidate_identity()
    return edited


def test_ga_edit_quant_diff(smollm2, tmp_path):
    from circuitforge.cli import app
    from circuitforge.models import save

    edited = gradient_ascent(smollm2, FACTS)
    folder = save(edited, tmp_path / "ga12", manifest={"method": {"name": "ga", "steps": 12, "lr": 1e-5}})
    res = CliRunner().invoke(app, ["quant-diff", "--base", "smollm2-135m", "--model", str(folder),
                                   "--json", str(tmp_path / "diff.json")])
    assert res.exit_code == 0, res.output
    print(res.output)
    rep = json.loads((tmp_path / "diff.json").read_text())
    med = rep["median_binwidth_to_update_ratio"]
    print(f"SmolLM2 GA-12 (lr 1e-5): median NF4 bin width / |Δθ| = {med:.1f} "
          f"(p5 {rep['binwidth_to_update_ratio']['p5']:.1f}, p95 {rep['binwidth_to_update_ratio']['p95']:.1f}), "
          f"code flip rate {rep['code_flip_rate']:.5f}, changed share {rep['changed_share']:.4f}")
    assert rep["n_tensors"] == 7 * smollm2.n_layers
    assert rep["changed_share"] > 0.5  # Adam moves almost every weight
    assert 1.0 < med < 1e5  # far below the bin width, yet a real change
    assert 0.0 < rep["code_flip_rate"] < 0.5


def test_route_a_matches_route_b_smollm2(smollm2, tmp_path):
    from circuitforge.models import save
    from circuitforge.quant import load_quantized, quantized_copy

    folder = save(smollm2, tmp_path / "base")
    toks = smollm2.to_tokens(["The capital of France is", "The element with symbol Br is"])
    with torch.no_grad():
        la = load_quantized(folder, "nf4").logits(toks)
        lb = quantized_copy(smollm2, "nf4").logits(toks)
    diff = (la - lb).abs().max().item()
    print(f"SmolLM2 NF4 route a vs b: max |Δlogit| = {diff:.3g}")
    assert diff < 1e-3
