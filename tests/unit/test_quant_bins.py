"""Bin math: code indices, widths, boundaries (tier: unit, no model loaded)."""

import pytest
import torch

from circuitforge.quant import (
    bin_edges,
    bin_width,
    bin_width_at,
    code_index,
    distance_to_boundary,
    sorted_codebook,
)


def _w(seed: int = 0, shape=(32, 128)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.02


def _brute_codes(w: torch.Tensor, scheme: str, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest sorted code by explicit search, block by block."""
    values, _ = sorted_codebook(scheme)
    flat = w.reshape(-1)
    idx = torch.empty(flat.numel(), dtype=torch.long)
    absmax = []
    for s in range(0, flat.numel(), blocksize):
        blk = flat[s : s + blocksize]
        a = blk.abs().max()
        absmax.append(a)
        for j, x in enumerate(blk.tolist()):
            d = [abs(x / a.item() - c) for c in values.tolist()]
            idx[s + j] = min(range(16), key=lambda k: (d[k], k))
    return idx.reshape(w.shape), torch.stack(absmax)


@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_code_index_matches_brute_force(scheme):
    w = _w(1, (4, 64))
    idx, absmax = code_index(w, scheme, 64)
    ref_idx, ref_abs = _brute_codes(w, scheme, 64)
    values, _ = sorted_codebook(scheme)
    # FP4 +0/-0 tie: both positions hold the value 0, compare values there
    assert torch.equal(values[idx], values[ref_idx])
    assert torch.equal(absmax, ref_abs)


def test_nf4_code_index_is_bitsandbytes_nibble():
    import bitsandbytes.functional as bnbf  # a hard dependency: fail, never skip

    w = _w(2)
    q, _ = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    q = q.reshape(-1)
    nib = torch.stack([q >> 4, q & 0xF], dim=1).reshape(-1).long()
    assert torch.equal(code_index(w, "nf4")[0].reshape(-1), nib)


@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_bin_width_formula_by_hand(scheme):
    w = _w(3)
    idx, absmax = code_index(w, scheme)
    width = bin_width(w, scheme)
    c = sorted_codebook(scheme)[0].tolist()
    flat_i, flat_w = idx.reshape(-1).tolist(), width.reshape(-1)
    for k in range(0, w.numel(), 97):
        i, a = flat_i[k], absmax[k // 64].item()
        hi, lo = c[min(i + 1, 15)], c[max(i - 1, 0)]
        expect = a * (c[1] - c[0]) / 2 if i == 0 else a * (c[15] - c[14]) / 2 if i == 15 else a * (hi - lo) / 2
        assert flat_w[k].item() == pytest.approx(expect, rel=1e-6)
    lower, upper = bin_edges(w, scheme)
    assert torch.allclose(upper - lower, width, rtol=1e-5, atol=1e-9)
    assert bool((lower <= w + 1e-9).all() and (w <= upper + 1e-9).all())


@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_update_past_boundary_flips_and_short_of_it_does_not(scheme):
    w = _w(4)
    idx, absmax = code_index(w, scheme)
    delta = distance_to_boundary(w, scheme, signed=True)
    assert torch.equal(delta.abs(), distance_to_boundary(w, scheme))
    is_absmax = (w.reshape(-1, 64).abs() == absmax[:, None]).reshape(w.shape)
    movable = ~is_absmax & (delta != 0)
    assert movable.float().mean() > 0.9
    rows, cols = movable.nonzero(as_tuple=True)
    for r, c in list(zip(rows.tolist(), cols.tolist(), strict=True))[::37]:  # one weight at a time
        for t, should_flip in ((0.99, False), (1.01, True)):
            w2 = w.clone()
            w2[r, c] += t * delta[r, c]
            i2, a2 = code_index(w2, scheme)
            assert torch.equal(a2, absmax)
            assert bool(i2[r, c] != idx[r, c]) is should_flip, (r, c, t)
            others = torch.ones_like(movable)
            others[r, c] = False
            assert torch.equal(i2[others], idx[others])


def test_zero_block_and_inputs_untouched():
    w = _w(5, (2, 64))
    w[0] = 0.0
    before = w.clone()
    assert bool((bin_width(w)[0] == 0).all()) and bool((distance_to_boundary(w)[0] == 0).all())
    assert bool((code_index(w)[0][0] == 7).all())  # NF4 exact zero
    assert torch.equal(w, before)


@pytest.mark.parametrize("scheme", ["nf4", "fp4"])
def test_bin_width_at_entries_is_bitwise_the_whole_matrix_read_there(scheme):
    """``bin_width_at`` (MANSU's candidates only) equals ``bin_width`` of the whole tensor read at the
    entries, bit for bit: full blocks (reciprocal then multiply), the short last block (divide), a zero
    block, each block's absmax entry, and weights exactly on a code value."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 50, generator=g) * 0.03   # 350 weights: five blocks of 64 and a short one of 30
    w.view(-1)[128:192] = 0.0                     # block 2 is all zero
    w.view(-1)[0:64] = w.view(-1)[0:64].clamp(-0.05, 0.05)
    w[0, 0], w[0, 5] = 0.05, 0.05 * 0.7229568362236023   # block 0: absmax 0.05 and an NF4 code value times it
    at = torch.cat([torch.arange(0, 350, 3), torch.tensor([128, 191, 320, 349])]).unique()
    want = bin_width(w, scheme).flatten()[at]
    got = bin_width_at(w, at, scheme)
    assert got.dtype == torch.float32 and got.shape == at.shape
    assert torch.equal(got, want)
    assert (want[at >= 320] > 0).any() and (want[(at >= 128) & (at < 192)] == 0).all()
