"""The pure-torch fake quantizer against bitsandbytes (tier: unit, no model loaded)."""

import bitsandbytes.functional as bnbf  # a hard dependency: a broken install fails, never skips
import pytest
import torch

from circuitforge.quant import Scheme, code_table, dynamic_map, fake_quantize, sorted_codebook, storage_codes


def _weights(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g) * 0.05
    w.view(-1)[:64] = 0.0  # a whole zero block (absmax 0)
    w.view(-1)[100] = 0.7  # an outlier
    return w


def _unpack(q: torch.Tensor, n: int) -> torch.Tensor:
    q = q.reshape(-1)
    out = torch.empty(q.numel() * 2, dtype=torch.uint8)
    out[0::2], out[1::2] = q >> 4, q & 0xF
    return out[:n]


def test_codebooks_match_bitsandbytes():
    for name in ("nf4", "fp4"):
        assert torch.equal(code_table(name), bnbf.get_4bit_type(name, device="cpu"))
    assert torch.equal(dynamic_map(), bnbf.create_dynamic_map())
    values, order = sorted_codebook("fp4")
    assert torch.equal(values, code_table("fp4")[order]) and bool((values[1:] >= values[:-1]).all())


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 128, 256])
@pytest.mark.parametrize("shape", [(48, 256), (1000,), (7, 33)])
def test_bit_exact_without_double_quant(name, blocksize, shape):
    w = _weights(shape, seed=blocksize + len(shape))
    before = w.clone()
    q, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type=name)
    ref = bnbf.dequantize_4bit(q, state).reshape(shape)
    mine = fake_quantize(w, name, blocksize)
    assert torch.equal(w, before)  # input untouched
    assert mine.dtype == w.dtype and mine.shape == w.shape
    assert torch.equal(mine, ref), f"max diff {(mine - ref).abs().max()}"
    codes, absmax = storage_codes(w, name, blocksize)
    assert torch.equal(codes.reshape(-1), _unpack(q, w.numel()))
    assert torch.equal(absmax, state.absmax)


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize("shape", [(64, 96), (8, 48)])
def test_bit_exact_vs_reference_kernel_when_blocks_straddle_rows(name, shape):
    """Rows not a multiple of the block size: bitsandbytes' own pure-torch dequantize (its reference
    semantics, as on CUDA) — the AVX512 C kernel on this CPU mis-scales straddling blocks (docs/quant.md)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    w = _weights(shape, seed=3)
    q, state = bnbf.quantize_4bit(w, blocksize=64, quant_type=name)
    ref = _dequantize_4bit_compute(q.reshape(-1), state.absmax, bnbf.get_4bit_type(name, device="cpu"), 64,
                                   state.shape, torch.float32)
    assert torch.equal(fake_quantize(w, name, 64), ref)


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 128])
def test_double_quant_bit_exact_except_cpu_8bit_rounding(name, blocksize):
    """Double quant: the 4-bit codes are bit-exact; every block whose 8-bit absmax code bitsandbytes' CPU
    kernel rounds to the nearest code (all but a measured ≤ 2%) is bit-exact too; the rest differ by one step."""
    w = _weights((96, 512), seed=blocksize)
    q, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type=name, compress_statistics=True)
    ref = bnbf.dequantize_4bit(q, state).reshape(w.shape)
    mine = fake_quantize(w, name, blocksize, double_quant=True)
    blocks_ref = ref.reshape(-1, blocksize)
    blocks_mine = mine.reshape(-1, blocksize)
    same = (blocks_ref == blocks_mine).all(dim=1)
    assert same.float().mean() >= 0.98, f"only {same.float().mean():.4f} of blocks bit-exact"
    # the differing blocks are a pure rescale by a neighbouring 8-bit absmax value (codes identical)
    codes = storage_codes(w, name, blocksize)[0].reshape(-1, blocksize)
    ref_codes = _unpack(q, w.numel()).reshape(-1, blocksize)
    assert torch.equal(codes, ref_codes)
    step = (blocks_ref[~same] - blocks_mine[~same]).abs().amax(dim=1)
    assert bool((step < 0.05 * blocks_ref[~same].abs().amax(dim=1).clamp(min=1e-12)).all())  # one 8-bit step


def test_scheme_parse_and_validation():
    assert Scheme.parse("nf4") == Scheme("nf4")
    assert Scheme.parse("fp4-b128-dq") == Scheme("fp4", 128, True)
    assert Scheme.parse("int8").label == "int8"
    from circuitforge.errors import CircuitForgeError

    for bad in ("nf5", "nf4-b100", "int8-dq", "nf4-x"):
        with pytest.raises(CircuitForgeError):
            Scheme.parse(bad)
