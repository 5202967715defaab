"""Route (a) (transformers BitsAndBytesConfig load) vs route (b) (round trip on a copy); which tensors are
quantized (tier: unit, tiny models)."""

import subprocess
import sys

import bitsandbytes  # noqa: F401  - a hard dependency: a broken install must fail here, not skip
import pytest
import torch

from circuitforge.quant import load_quantized, quantized_copy, quantized_linear_names

TOKENS = torch.tensor([[1, 5, 7, 9, 11, 3, 20, 4], [1, 8, 9, 10, 4, 2, 30, 31]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_llama, tiny_gpt2):
    from circuitforge.models import save

    root = tmp_path_factory.mktemp("quant-routes")
    return {"tiny-llama": save(tiny_llama, root / "llama"), "tiny-gpt2": save(tiny_gpt2, root / "gpt2")}


def test_import_does_not_load_bitsandbytes():
    code = "import sys, circuitforge.quant; sys.exit('bitsandbytes' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("scheme", ["nf4", "fp4", "nf4-dq"])
def test_route_a_matches_route_b(request, saved, spec, scheme):
    handle = request.getfixturevalue(spec.replace("-", "_"))
    qa = load_quantized(saved[spec], scheme)
    assert {m + ".weight" for m in qa.quantized_modules()} == set(quantized_linear_names(handle))
    qb = quantized_copy(handle, scheme)
    with torch.no_grad():
        la, lb, lfp = qa.logits(TOKENS), qb.logits(TOKENS), handle.logits(TOKENS)
    assert torch.allclose(la, lb, atol=1e-5, rtol=0), f"max |a-b| {(la - lb).abs().max()}"
    assert (lb - lfp).abs().max() > 1e-3  # quantization really happened


def test_which_tensors_are_quantized(tiny_llama, tiny_gpt2):
    names = quantized_linear_names(tiny_llama)
    assert len(names) == 7 * tiny_llama.n_layers and all(n.endswith("_proj.weight") for n in names)
    assert not any("embed" in n or "norm" in n or "lm_head" in n for n in names)
    g = quantized_linear_names(tiny_gpt2)
    assert len(g) == 4 * tiny_gpt2.n_layers and not any("wte" in n or "wpe" in n or "ln_" in n for n in g)


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gpt2"])
def test_quantized_copy_leaves_input_and_unquantized_tensors(request, spec):
    handle = request.getfixturevalue(spec.replace("-", "_"))
    before = {k: v.detach().clone() for k, v in handle.named_parameters().items()}
    sha = handle.sha256
    q = quantized_copy(handle, "nf4")
    after = handle.named_parameters()
    assert all(torch.equal(before[k], after[k]) for k in before) and handle.sha256 == sha
    qp = q.named_parameters()
    names = set(quantized_linear_names(handle))
    for k, v in before.items():
        assert torch.equal(qp[k], v) != (k in names), k  # exactly the listed tensors changed


@pytest.mark.parametrize("scheme", ["nf4", "fp4", "nf4-b128"])
def test_torch_backend_equals_bnb_backend(tiny_facts, scheme):
    a = quantized_copy(tiny_facts, scheme, backend="bnb").named_parameters()
    b = quantized_copy(tiny_facts, scheme, backend="torch").named_parameters()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_cpu_kernel_is_close_but_not_exact(saved, tiny_llama):
    exact = load_quantized(saved["tiny-llama"], "nf4").logits(TOKENS)
    fast = load_quantized(saved["tiny-llama"], "nf4", exact_fp32=False).logits(TOKENS)
    assert torch.allclose(exact, fast, atol=0.05)


def test_route_a_refuses_other_blocksizes(saved):
    from circuitforge.errors import CircuitForgeError

    with pytest.raises(CircuitForgeError):
        load_quantized(saved["tiny-llama"], "nf4-b128")


def test_quantized_mirror_refresh_equals_a_fresh_quantized_copy(tiny_facts):
    """After edits to two matrices, refreshing exactly those gives the weights of a fresh route-(b) copy, bit
    for bit; a matrix left out of the refresh keeps its old (stale) values."""
    from circuitforge.models import clone
    from circuitforge.quant import QuantizedMirror, quantized_copy

    src = clone(tiny_facts)
    mirror = QuantizedMirror(src, "nf4", backend="torch")
    p = src.named_parameters()
    a, b = "model.layers.0.mlp.down_proj.weight", "model.layers.2.self_attn.q_proj.weight"
    with torch.no_grad():
        p[a][0, :8] += 0.05
        p[b][3, :5] -= 0.07
    mirror.refresh([a])
    fresh = quantized_copy(src, "nf4", backend="torch").named_parameters()
    got = mirror.handle.named_parameters()
    assert torch.equal(got[a], fresh[a])
    assert not torch.equal(got[b], fresh[b])  # not refreshed yet: stale
    mirror.refresh([b])
    assert all(torch.equal(got[n], fresh[n]) for n in fresh)
    assert mirror.handle.sha256 == quantized_copy(src, "nf4", backend="torch").sha256
