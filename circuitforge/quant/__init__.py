"""Stage 6 — quant: does an edit survive NF4 / FP4 / int8 post-training quantization?

* :mod:`.codebook` — :class:`Scheme` and the NF4/FP4 codebooks;
* :mod:`.fakequant` — a pure-torch fake quantizer, bit-exact with bitsandbytes' 4-bit round trip;
* :mod:`.bins` — code index, bin edges, bin width, distance to the nearest boundary;
* :mod:`.routes` — which tensors are quantized; route (a) ``load_quantized`` (transformers
  ``BitsAndBytesConfig``) and route (b) ``quantized_copy`` (in-place round trip on a copy);
* :mod:`.diagnostics` — bin-width/update ratios and code-flip rates of an edit (``diff_report``);
* :mod:`.survival` — forget/retain accuracy per scheme, PTQ gap, recovery ratio.

bitsandbytes is imported only inside the functions that need it.
"""

from circuitforge.quant.bins import bin_edges, bin_width, bin_width_at, code_index, distance_to_boundary
from circuitforge.quant.codebook import Scheme, code_table, dynamic_map, midpoints, sorted_codebook
from circuitforge.quant.diagnostics import check_compatible, diff_report, tensor_diff
from circuitforge.quant.fakequant import block_absmax, fake_quantize, storage_codes
from circuitforge.quant.routes import (
    QuantizedMirror,
    QuantizedModel,
    bnb_config,
    load_quantized,
    quantized_copy,
    quantized_linear_names,
    quantized_weights,
)
from circuitforge.quant.survival import recovery_ratio, survival

__all__ = [
    "QuantizedMirror", "QuantizedModel", "Scheme", "bin_edges", "bin_width", "bin_width_at", "block_absmax", "bnb_config", "check_compatible",
    "code_index", "code_table", "diff_report", "distance_to_boundary", "dynamic_map", "fake_quantize",
    "load_quantized", "midpoints", "quantized_copy", "quantized_linear_names", "quantized_weights",
    "recovery_ratio", "sorted_codebook", "storage_codes", "survival", "tensor_diff",
]
