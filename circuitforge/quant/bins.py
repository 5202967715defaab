"""Bin math for 4-bit blockwise quantization (NF4 / FP4), in weight units.

Notation: a weight ``w`` sits in block ``b`` (``blocksize`` consecutive elements of the flattened tensor,
as bitsandbytes cuts them) with absmax ``A = max |w|`` over the block. Let ``c_0 < … < c_15`` be the
sorted codebook and ``m_k = (c_k + c_{k+1}) / 2`` the 15 midpoints. The weight's code is the sorted
position ``i`` with ``m_{i-1} < w/A <= m_i``.

* bin boundaries (weight units): ``lower = A · m_{i-1}``, ``upper = A · m_i``; at the codebook ends the
  outer edge is the clamp ``∓A`` (``c_0 = -1``, ``c_15 = 1``), which no update can cross without
  becoming the block's new absmax.
* full local bin width: ``A · (c_{i+1} - c_{i-1}) / 2 = upper - lower``; at the ends the one-sided width
  ``A · (c_1 - c_0) / 2`` (resp. ``A · (c_15 - c_14) / 2``), i.e. from the end code to its only boundary.
* distance to the boundary: ``min(w - lower, upper - w)`` over the *interior* boundaries only (the
  ``∓A`` clamp edges are not flip boundaries), absolute by default; with ``signed=True`` the displacement
  ``δ`` with ``w + δ`` on the nearest interior boundary (``δ < 0``: the boundary is below). An update
  ``w + t·δ`` (same absmax) keeps the code for ``t < 1`` and flips it for ``t > 1``.

Boundaries are computed as ``A · m`` in float32; bitsandbytes compares ``w · (1/A)`` with ``m``, so
within a few float32 ulps of a boundary the two can disagree (this is why tests step 1% past it).
All functions are pure: inputs are never modified; blocks whose absmax is 0 get width 0 and distance 0.
"""

import torch
from jaxtyping import Float, Int

from circuitforge.errors import CircuitForgeError
from circuitforge.quant.codebook import midpoints, sorted_codebook
from circuitforge.quant.fakequant import scaled_at, sorted_codes


def _check(scheme: str) -> None:
    if scheme not in ("nf4", "fp4"):
        raise CircuitForgeError(f"bin math is defined for the 4-bit schemes nf4/fp4, not {scheme!r}")


def code_index(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64
) -> tuple[Int[torch.Tensor, "*shape"], Float[torch.Tensor, " blocks"]]:
    """Each weight's code index and the per-block absmax.

    Returns ``(idx, absmax)``: ``idx`` int64, same shape as ``w``, the position 0..15 in the *sorted*
    codebook (for NF4 that is exactly bitsandbytes' stored nibble; for FP4 map it through
    ``sorted_codebook("fp4")[1]`` to get the nibble); ``absmax`` float32 of shape
    ``[ceil(numel / blocksize)]`` over consecutive elements of ``w`` flattened row-major.
    """
    _check(scheme)
    return sorted_codes(w, scheme, blocksize)


def _per_element_absmax(absmax: torch.Tensor, n: int, blocksize: int) -> torch.Tensor:
    return absmax.repeat_interleave(blocksize)[:n]


def bin_edges(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64
) -> tuple[Float[torch.Tensor, "*shape"], Float[torch.Tensor, "*shape"]]:
    """``(lower, upper)`` bin boundaries of every weight, in weight units (float32, shape of ``w``);
    at the codebook ends the outer edge is ``-A`` / ``+A``."""
    idx, absmax = code_index(w, scheme, blocksize)
    mids = midpoints(scheme)
    ext = torch.cat([torch.tensor([-1.0]), mids, torch.tensor([1.0])])  # ext[k] = lower edge of code k
    flat = idx.reshape(-1)
    a = _per_element_absmax(absmax, flat.numel(), blocksize)
    lower = (ext[flat] * a).reshape(w.shape)
    upper = (ext[flat + 1] * a).reshape(w.shape)
    return lower, upper


def bin_width(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64
) -> Float[torch.Tensor, "*shape"]:
    """Full local bin width ``A · (c_{i+1} - c_{i-1}) / 2`` of every weight (float32, shape of ``w``),
    one-sided ``A · (c_1 - c_0) / 2`` / ``A · (c_15 - c_14) / 2`` at the codebook ends."""
    idx, absmax = code_index(w, scheme, blocksize)
    flat = idx.reshape(-1)
    a = _per_element_absmax(absmax, flat.numel(), blocksize)
    return (_half_span(flat, scheme) * a).reshape(w.shape)


def _half_span(idx: Int[torch.Tensor, " n"], scheme: str) -> Float[torch.Tensor, " n"]:
    """``(c_{i+1} - c_{i-1}) / 2`` of each sorted code position ``i``, one-sided at the codebook ends."""
    values, _ = sorted_codebook(scheme)
    padded = torch.cat([values[:1], values, values[-1:]])  # padded[k+1] = c_k; ends repeat themselves
    return (padded[idx + 2] - padded[idx]) / 2


def bin_width_from_scaled(scaled: Float[torch.Tensor, " k"], absmax: Float[torch.Tensor, " k"],
                          scheme: str = "nf4") -> Float[torch.Tensor, " k"]:
    """:func:`bin_width` of weights given as :func:`~circuitforge.quant.fakequant.scaled_at` returns them (their
    normalized values and their blocks' absmax)."""
    _check(scheme)
    return _half_span(torch.bucketize(scaled, midpoints(scheme), out_int32=True).long(), scheme) * absmax


def bin_width_at(
    w: Float[torch.Tensor, "*shape"], at: Int[torch.Tensor, " k"], scheme: str = "nf4", blocksize: int = 64
) -> Float[torch.Tensor, " k"]:
    """:func:`bin_width` of the entries ``at`` of ``w`` flattened row-major, bitwise equal to
    ``bin_width(w).flatten()[at]`` without computing every weight's code."""
    _check(scheme)
    return bin_width_from_scaled(*scaled_at(w, at, blocksize), scheme)


def distance_to_boundary(
    w: Float[torch.Tensor, "*shape"], scheme: str = "nf4", blocksize: int = 64, signed: bool = False
) -> Float[torch.Tensor, "*shape"]:
    """Distance from each weight to the nearest *interior* boundary of its bin, in weight units (float32).

    ``signed=False``: ``|δ|``; ``signed=True``: ``δ`` such that ``w + δ`` lies on that boundary (negative
    when the nearest boundary is below ``w``). Ties between the two edges pick the upper one.
    """
    lower, upper = bin_edges(w, scheme, blocksize)
    idx, _ = code_index(w, scheme, blocksize)
    x = w.detach().float()
    down = x - lower
    up = upper - x
    down = torch.where(idx == 0, torch.full_like(down, float("inf")), down)
    up = torch.where(idx == 15, torch.full_like(up, float("inf")), up)
    delta = torch.where(up <= down, up, -down)
    delta = torch.where(torch.isinf(delta), torch.zeros_like(delta), delta)  # zero-absmax blocks
    return delta if signed else delta.abs()
