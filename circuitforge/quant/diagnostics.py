"""How far an edit is from surviving 4-bit quantization: bin-width/update ratios and code flips.

For a base θ₀ and an edited θ₁ (same architecture), over every weight bitsandbytes quantizes
(:func:`~circuitforge.quant.routes.quantized_linear_names`, in the ``[out, in]`` orientation it quantizes):

* ``changed_share`` — share of those weights with ``θ₁ ≠ θ₀`` (exact float comparison);
* ``binwidth_to_update_ratio`` — over the changed weights, the full local bin width of θ₀'s code,
  ``A₀ · (c_{i+1} − c_{i−1}) / 2`` (:func:`~circuitforge.quant.bins.bin_width`), divided by ``|Δθ|``;
  reported as median / p5 / p95 per tensor and overall (``median_binwidth_to_update_ratio``). A ratio of
  100 means the update is 100× smaller than the bin it sits in;
* ``code_flip_rate`` — share of changed weights whose code *index* differs between θ₀ and θ₁, each
  quantized with its own block absmax (exactly what the quantizer would store); compared as indices, never
  as dequantized values. Blocks whose absmax changed (which moves all their boundaries) are counted and
  their flips reported separately (``flips_in_absmax_changed_blocks``, ``code_flip_rate_fixed_absmax``).

Percentiles are exact (numpy ``percentile``, linear interpolation) over all changed weights.
"""

from typing import Any

import numpy as np
import torch

from circuitforge._provenance import versions
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.quant.bins import bin_width, code_index
from circuitforge.quant.codebook import Scheme
from circuitforge.quant.routes import quantized_weights

FORMAT = "circuitforge.quant-diff/1"


def check_compatible(base: ModelHandle, edited: ModelHandle) -> None:
    """Raise :class:`CircuitForgeError` unless both models share architecture, parameter shapes and tokenizer."""
    if base.architecture() != edited.architecture():
        raise CircuitForgeError(
            f"architectures differ: {base.spec} {base.architecture()} vs {edited.spec} {edited.architecture()}"
        )
    sb = {k: tuple(v.shape) for k, v in base.named_parameters().items()}
    se = {k: tuple(v.shape) for k, v in edited.named_parameters().items()}
    # an edit may untie the unembedding (its own lm_head where the base reads the embedding, or back):
    # the same architecture, one more tensor on one side, shaped as the other side's tied embedding
    for one, other, h in ((sb, se, edited), (se, sb, base)):
        if "lm_head.weight" in other and "lm_head.weight" not in one:
            emb = tuple(h.hf.get_input_embeddings().weight.shape)
            if other["lm_head.weight"] == emb:
                other.pop("lm_head.weight")
    if sb != se:
        raise CircuitForgeError(f"parameter names or shapes differ between {base.spec} and {edited.spec}")
    if base.tokenizer.get_vocab() != edited.tokenizer.get_vocab():
        raise CircuitForgeError(f"tokenizers differ between {base.spec} and {edited.spec}")


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    if x.size == 0:
        return {"median": None, "p5": None, "p95": None}
    p5, med, p95 = np.percentile(x, [5, 50, 95])
    return {"median": float(med), "p5": float(p5), "p95": float(p95)}


def tensor_diff(
    w0: torch.Tensor, w1: torch.Tensor, scheme: str = "nf4", blocksize: int = 64
) -> tuple[dict[str, Any], np.ndarray]:
    """Diagnostics for one ``[out, in]`` weight pair: ``(summary, ratios of the changed weights)``."""
    w0 = w0.detach().float()
    w1 = w1.detach().float()
    delta = w1 - w0
    changed = delta != 0
    n, n_changed = w0.numel(), int(changed.sum())
    i0, a0 = code_index(w0, scheme, blocksize)
    i1, a1 = code_index(w1, scheme, blocksize)
    flips = (i0 != i1) & changed
    absmax_changed = a0 != a1
    in_changed_block = absmax_changed.repeat_interleave(blocksize)[:n].reshape(w0.shape)
    ratios = (bin_width(w0, scheme, blocksize)[changed] / delta[changed].abs()).numpy()
    n_flips = int(flips.sum())
    n_flip_abs = int((flips & in_changed_block).sum())
    n_changed_fixed = int((changed & ~in_changed_block).sum())
    summary = {
        "n": n,
        "n_changed": n_changed,
        "changed_share": n_changed / n if n else 0.0,
        "binwidth_to_update_ratio": _quantiles(ratios),
        "n_code_flips": n_flips,
        "code_flip_rate": n_flips / n_changed if n_changed else 0.0,
        "n_blocks": int(a0.numel()),
        "n_absmax_changed_blocks": int(absmax_changed.sum()),
        "flips_in_absmax_changed_blocks": n_flip_abs,
        "n_changed_fixed_absmax": n_changed_fixed,
        "code_flip_rate_fixed_absmax": (n_flips - n_flip_abs) / n_changed_fixed if n_changed_fixed else 0.0,
        "all_code_changes": int((i0 != i1).sum()),
    }
    return summary, ratios


def diff_report(
    base_handle: ModelHandle, edited_handle: ModelHandle, scheme: "Scheme | str" = "nf4", per_tensor: bool = True
) -> dict[str, Any]:
    """The edit diagnostics as a JSON-serialisable dict (see the module docstring).

    Top-level keys include ``median_binwidth_to_update_ratio`` (float, NaN-free: ``None`` when no weight
    changed), ``code_flip_rate``, ``changed_share``, ``binwidth_to_update_ratio`` (median/p5/p95),
    ``n_params``, ``n_changed``, ``n_code_flips``, ``n_absmax_changed_blocks``, ``tensors`` (per tensor).
    """
    sch = Scheme.parse(scheme)
    if not sch.is_4bit:
        raise CircuitForgeError(f"diff_report needs a 4-bit scheme (nf4/fp4), not {sch.label}")
    check_compatible(base_handle, edited_handle)
    w0s, w1s = quantized_weights(base_handle), quantized_weights(edited_handle)
    tensors: dict[str, Any] = {}
    all_ratios: list[np.ndarray] = []
    tot = {"n": 0, "n_changed": 0, "n_code_flips": 0, "n_blocks": 0, "n_absmax_changed_blocks": 0,
           "flips_in_absmax_changed_blocks": 0, "n_changed_fixed_absmax": 0}
    for name, w0 in w0s.items():
        s, r = tensor_diff(w0, w1s[name], sch.name, sch.blocksize)
        tensors[name] = s
        all_ratios.append(r)
        for k in tot:
            tot[k] += s[k]
    ratios = np.concatenate(all_ratios) if all_ratios else np.zeros(0, dtype=np.float32)
    q = _quantiles(ratios)
    nc = tot["n_changed"]
    return {
        "format": FORMAT,
        "scheme": sch.to_dict() | {"label": sch.label},
        "base": base_handle.identity(),
        "edited": edited_handle.identity(),
        "versions": versions(),
        "median_binwidth_to_update_ratio": q["median"],
        "binwidth_to_update_ratio": q,
        "code_flip_rate": tot["n_code_flips"] / nc if nc else 0.0,
        "changed_share": nc / tot["n"] if tot["n"] else 0.0,
        "n_params": tot["n"],
        "n_changed": nc,
        "n_code_flips": tot["n_code_flips"],
        "n_blocks": tot["n_blocks"],
        "n_absmax_changed_blocks": tot["n_absmax_changed_blocks"],
        "flips_in_absmax_changed_blocks": tot["flips_in_absmax_changed_blocks"],
        "code_flip_rate_fixed_absmax": (
            (tot["n_code_flips"] - tot["flips_in_absmax_changed_blocks"]) / tot["n_changed_fixed_absmax"]
            if tot["n_changed_fixed_absmax"] else 0.0
        ),
        "n_tensors": len(tensors),
        "tensors": tensors if per_tensor else {},
    }
