"""SmolLM2-135M: a short MANSU run on a fixed small neuron-level circuit (the circuit search is exercised on
tiny-facts) and a short SURE run on the built-in benchmark — exact masks, NF4 code flips, the retain-output
bound, the input model untouched (tier: integration, loads SmolLM2)."""

import pytest
import torch

from circuitforge.data import load_task
from circuitforge.surgery import unlearn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tasks():
    return load_task("builtin:forget").head(8), load_task("builtin:retain").head(12)


def test_mansu_on_smollm2(smollm2, tasks):
    forget, retain = tasks
    sha = smollm2.sha256
    neurons = tuple(f"m22.n{i}" for i in range(0, 1536, 16))
    r = unlearn(smollm2, forget, retain, method="mansu", seed=0, circuit_nodes=("a23.h4", "a23.kv1", *neurons),
                max_steps=2, step_share=0.01)
    assert r.diagnostics["circuit"]["source"] == "circuit_nodes setting"
    st = r.mask_stats
    assert st["n_changed_outside_mask"] == 0 and 0 < st["n_changed"] <= st["n_mask"]
    # a neuron is its gate/up rows and down column: 96 neurons x 3 x 576 weights at most
    mlp = sum(v.get("n_mask", 0) for k, v in st["tensors"].items() if ".mlp." in k)
    assert 0 < mlp <= 96 * 3 * 576
    assert r.diagnostics["retain_output_change_max"] <= r.diagnostics["retain_output_bound"] * (1 + 1e-6)
    flips = r.diagnostics["code_flips"]
    assert flips["n_changed"] == st["n_changed"] and flips["code_flip_rate"] >= 0.99
    assert flips["n_absmax_changed_blocks"] == 0
    assert r.loss_history[-1]["step"] >= 1
    smollm2.invalidate_identity()
    assert smollm2.sha256 == sha


def test_sure_mask_on_smollm2(smollm2, tasks):
    forget, retain = tasks
    r = unlearn(smollm2, forget, retain, method="sure", seed=0, max_steps=1, batch_size=4, saliency_share=0.1)
    salient = set(r.diagnostics["salient_modules"])
    base, edited = smollm2.named_parameters(), r.handle.named_parameters()
    moved = {n for n, p in base.items() if not torch.equal(p, edited[n])}
    assert moved and moved <= salient
