"""A pure-torch fake quantizer that reproduces bitsandbytes' 4-bit round trip bit for bit.

``fake_quantize(w)`` returns ``dequantize_4bit(*quantize_4bit(w))`` without importing bitsandbytes. The
steps are the ones bitsandbytes 0.50 runs on CPU (``backends/default/ops.py`` for quantizing, the C
kernel ``cdequantize_blockwise_cpu_{nf4,fp4}_fp32`` for dequantizing), in the same float32 order:

1. flatten ``w`` (row-major), cut it into blocks of ``blocksize`` consecutive elements (the last block
   may be shorter); ``A_b = max |w|`` over block ``b``;
2. ``s = clamp(w · (1 / max(A_b, 1e-38)), -1, 1)`` (reciprocal then multiply; the short last block
   divides: ``w / A``);
3. the code is the bin of ``s`` among the 15 midpoints of the sorted codebook
   (``torch.bucketize``, right=False: a value exactly on a midpoint takes the *lower* code);
4. dequantized value ``c · A_b`` in float32, then cast to ``w``'s dtype.

With ``double_quant=True`` the absmax vector is itself quantized before step 4: ``offset = mean(A)``,
``A - offset`` is quantized to the 8-bit dynamic map in blocks of 256 (nearest code), and dequantizes to
``code · A2 + offset``. Steps 1–3 (the 4-bit codes) are unaffected by double quantization.

Known, measured difference (see docs/quant.md): bitsandbytes' *CPU* 8-bit blockwise kernel (used only for
the absmax in double quantization) does not always pick the nearest 8-bit code — on 32k uniform values it
disagreed with exact nearest-code rounding on 0.15% of them, all within ~1e-5 of a midpoint (ties to the
side away from the nearest code). The CUDA kernel and bitsandbytes' own pure-torch kernel round to the
nearest code, as we do; so with ``double_quant=True`` a small share of blocks may differ from bitsandbytes-
on-CPU by one 8-bit absmax step (the tests bound that share and require bit-exactness everywhere else).
"""

import torch
from jaxtyping import Float, Int, UInt8

from circuitforge.quant.codebook import (
    DOUBLE_QUANT_BLOCKSIZE,
    code_table,
    dynamic_map,
    midpoints,
    sorted_codebook,
)


def _absmax(flat: Float[torch.Tensor, " n"], blocksize: int) -> tuple[Float[torch.Tensor, " blocks"], int]:
    """Per-block absmax of ``flat`` (the last block may be shorter) and the number of elements in full blocks."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = full // blocksize
    absmax = flat[:full].reshape(blocks, blocksize).abs().max(dim=-1)[0] if blocks else flat.new_zeros(0)
    if full < n:
        absmax = torch.cat([absmax, flat[full:].abs().max().unsqueeze(0)])
    return absmax, full


def _scaled_blocks(flat: Float[torch.Tensor, " n"], blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element normalized value ``s`` (clamped to [-1, 1]) and per-block absmax, as bitsandbytes."""
    absmax, full = _absmax(flat, blocksize)
    blocks = full // blocksize
    com = flat[:full].reshape(blocks, blocksize)
    scaled = torch.clamp(com * (1.0 / absmax[:blocks].clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if full < flat.numel():
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / absmax[-1].clamp(min=1e-38), -1, 1)])
    return scaled, absmax


def scaled_at(w: Float[torch.Tensor, "*shape"], at: Int[torch.Tensor, " k"], blocksize: int = 64,
              ) -> tuple[Float[torch.Tensor, " k"], Float[torch.Tensor, " k"]]:
    """The normalized values ``s`` and the block absmax of the entries ``at`` of ``w`` flattened row-major
    (float32, ``[k]`` each): bitwise :func:`_scaled_blocks` read there, without normalizing the other entries
    (the absmax of every block is still taken, one reduction)."""
    flat = w.detach().reshape(-1).float()
    absmax, full = _absmax(flat, blocksize)
    x, a = flat[at], absmax[at // blocksize]
    inv = 1.0 / a.clamp(min=1e-38)   # full blocks multiply by the reciprocal, the short last block divides
    scaled = torch.where(at < full, x * inv, x / a.clamp(min=1e-38))
    return torch.clamp(scaled, -1, 1), a


def block_absmax(w: Float[torch.Tensor, "*shape"], blocksize: int = 64) -> Float[torch.Tensor, " blocks"]:
    """Per-block absmax (float32) of ``w`` flattened row-major; ``blocks = ceil(numel / blocksize)``."""
    return _scaled_blocks(w.detach().reshape(-1).float(), blocksize)[1]


def sorted_codes(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64
) -> tuple[Int[torch.Tensor, "*shape"], Float[torch.Tensor, " blocks"]]:
    """Each weight's code as a *sorted-codebook position* 0..15 (int64, same shape as ``w``) and the
    per-block absmax (float32). For NF4 the position equals the stored nibble."""
    scaled, absmax = _scaled_blocks(w.detach().reshape(-1).float(), blocksize)
    pos = torch.bucketize(scaled, midpoints(scheme), out_int32=True).long()
    return pos.reshape(w.shape), absmax


def storage_codes(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64
) -> tuple[UInt8[torch.Tensor, "*shape"], Float[torch.Tensor, " blocks"]]:
    """The 4-bit nibbles bitsandbytes stores (uint8, unpacked, same shape as ``w``) and the absmax."""
    pos, absmax = sorted_codes(w, scheme, blocksize)
    _, order = sorted_codebook(scheme)
    return order[pos].to(torch.uint8), absmax


def quantize_absmax(absmax: Float[torch.Tensor, " blocks"]) -> Float[torch.Tensor, " blocks"]:
    """Double quantization of the absmax vector, dequantized (float32): ``offset = mean``, blocks of 256,
    nearest code of the 8-bit dynamic map (ties to the lower code), ``code · A2 + offset``."""
    if absmax.numel() == 0:
        return absmax.clone()
    offset = absmax.mean()
    x = absmax - offset
    code = dynamic_map()
    n, bs = x.numel(), DOUBLE_QUANT_BLOCKSIZE
    out = torch.empty_like(x)
    for start in range(0, n, bs):
        blk = x[start : start + bs]
        a2 = blk.abs().max()
        normed = blk / a2 if a2 > 0 else torch.zeros_like(blk)
        idx = (normed[:, None] - code[None, :]).abs().argmin(dim=1)  # first minimum: ties go low
        out[start : start + bs] = code[idx] * a2
    return out + offset


def dequantize(
    codes: UInt8[torch.Tensor, "*shape"], absmax: Float[torch.Tensor, " blocks"], scheme: str = "nf4",
    blocksize: int = 64, dtype: torch.dtype = torch.float32,
) -> Float[torch.Tensor, "*shape"]:
    """``code_table[nibble] · absmax[block]`` in float32, cast to ``dtype`` (bitsandbytes' dequantize)."""
    vals = code_table(scheme)[codes.reshape(-1).long()]
    n = vals.numel()
    scale = absmax.float().repeat_interleave(blocksize)[:n]
    return (vals * scale).to(dtype).reshape(codes.shape)


def fake_quantize(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64, double_quant: bool = False
) -> Float[torch.Tensor, "*shape"]:
    """The dequantized 4-bit weights bitsandbytes would compute for ``w`` (same shape and dtype, new tensor).

    Blocks are consecutive ``blocksize`` elements of ``w`` flattened row-major — for an ``nn.Linear``
    weight ``[out, in]`` that is along rows. ``w`` is not modified.
    """
    codes, absmax = storage_codes(w, scheme, blocksize)
    if double_quant:
        absmax = quantize_absmax(absmax)
    return dequantize(codes, absmax, scheme, blocksize, dtype=w.dtype)
