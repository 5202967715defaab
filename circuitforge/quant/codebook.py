"""The quantization schemes and their codebooks (pure torch; no bitsandbytes import).

* **NF4** (QLoRA): 16 values, the quantiles of N(0, 1) rescaled to [-1, 1], with an exact 0. The table is
  sorted, so a weight's bitsandbytes storage nibble *is* its index in the sorted codebook.
* **FP4** (bitsandbytes' E2M1 variant, exponent bias 2): 16 values listed by bitsandbytes in *bit-pattern*
  order ``[0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, ...] / 12``. Our bin math works in *value* order;
  ``sorted_codebook`` gives the order that maps a sorted position back to the stored nibble. FP4 has both
  ``+0`` and ``-0``; in bitsandbytes' sort (``torch.argsort``) ``+0`` (nibble 0) is sorted position 7 and
  ``-0`` (nibble 8) position 8, the boundary between them is 0: values in ``(-0.0026, 0]`` get ``+0`` and
  values in ``(0, 0.0026]`` get ``-0``. Both dequantize to 0, so a flip between them changes no value.
* **dynamic 8-bit map** (bitsandbytes ``create_dynamic_map``): used for the second-level ("double")
  quantization of the per-block absmax values.

A weight ``w`` in a block with absmax ``A`` (max |w| over the block) is stored as the code ``c_i``
nearest to ``w / A``; it dequantizes to ``c_i · A``.
"""

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from circuitforge.errors import CircuitForgeError

SchemeName = Literal["nf4", "fp4", "int8"]
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
#: block size bitsandbytes uses for the second-level quantization of the absmax values
DOUBLE_QUANT_BLOCKSIZE = 256

_NF4 = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
]
_FP4_BITS = [0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0]


@dataclass(frozen=True)
class Scheme:
    """A quantization scheme, always named explicitly and recorded in every report.

    Attributes:
        name: ``"nf4"``, ``"fp4"`` (4-bit blockwise, bitsandbytes ``quantize_4bit``) or ``"int8"``
            (LLM.int8: row-wise absmax int8 weights; ``blocksize``/``double_quant`` do not apply).
        blocksize: consecutive elements of the flattened weight sharing one absmax (4-bit only).
            transformers' ``BitsAndBytesConfig`` always uses 64.
        double_quant: also quantize the absmax values (8-bit dynamic map, blocks of 256, mean offset).
    """

    name: SchemeName
    blocksize: int = 64
    double_quant: bool = False

    def __post_init__(self) -> None:
        if self.name not in ("nf4", "fp4", "int8"):
            raise CircuitForgeError(f"unknown quantization scheme {self.name!r} (nf4, fp4, int8)")
        if self.name != "int8" and self.blocksize not in BLOCKSIZES:
            raise CircuitForgeError(f"blocksize {self.blocksize} not supported by bitsandbytes {BLOCKSIZES}")
        if self.name == "int8" and (self.double_quant or self.blocksize != 64):
            raise CircuitForgeError("int8 (LLM.int8) has no block size or double quantization")

    @property
    def is_4bit(self) -> bool:
        return self.name in ("nf4", "fp4")

    @property
    def label(self) -> str:
        """Short unique text: ``nf4``, ``nf4-b128``, ``fp4-dq``, ``int8``."""
        if not self.is_4bit:
            return self.name
        return self.name + ("" if self.blocksize == 64 else f"-b{self.blocksize}") + ("-dq" if self.double_quant else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, text: "str | Scheme") -> "Scheme":
        """``"nf4"``, ``"fp4"``, ``"int8"``, with optional ``-b128`` (block size) and ``-dq`` suffixes,
        e.g. ``"nf4-b128-dq"``; a :class:`Scheme` passes through."""
        if isinstance(text, Scheme):
            return text
        parts = text.strip().lower().split("-")
        blocksize, dq = 64, False
        for p in parts[1:]:
            if p == "dq":
                dq = True
            elif p.startswith("b") and p[1:].isdigit():
                blocksize = int(p[1:])
            else:
                raise CircuitForgeError(f"cannot parse scheme {text!r} (e.g. nf4, fp4-b128, nf4-dq, int8)")
        if parts[0] not in ("nf4", "fp4", "int8"):
            raise CircuitForgeError(f"unknown quantization scheme {parts[0]!r} (nf4, fp4, int8)")
        return cls(parts[0], blocksize, dq)  # type: ignore[arg-type]


def code_table(name: str) -> Float[torch.Tensor, "16"]:
    """The 16 code values in bitsandbytes storage (nibble) order, float32, exactly as
    ``bitsandbytes.functional.get_4bit_type`` builds them (FP4: divided by 12 in float32)."""
    if name == "nf4":
        return torch.tensor(_NF4, dtype=torch.float32)
    if name == "fp4":
        t = torch.tensor(_FP4_BITS, dtype=torch.float32)
        return t.div_(t.abs().max())
    raise CircuitForgeError(f"no 4-bit codebook for scheme {name!r}")


def sorted_codebook(name: str) -> tuple[Float[torch.Tensor, "16"], torch.Tensor]:
    """``(values sorted ascending, order)`` with ``values == code_table(name)[order]``; ``order`` (int64)
    maps a sorted position to the stored nibble. NF4: ``order`` is the identity."""
    table = code_table(name)
    order = torch.argsort(table, stable=True)
    return table[order], order


def midpoints(name: str) -> Float[torch.Tensor, "15"]:
    """The 15 decision boundaries in normalized units: midpoints of neighbouring sorted codes (float32,
    computed as bitsandbytes does: ``(c[:-1] + c[1:]) / 2``)."""
    values, _ = sorted_codebook(name)
    return (values[:-1] + values[1:]) / 2


def dynamic_map() -> Float[torch.Tensor, "256"]:
    """bitsandbytes' signed 8-bit dynamic map (``create_dynamic_map(True, 7, 8)``), sorted, float32."""
    data: list[float] = []
    max_exp, non_sign = 7, 7
    for i in range(max_exp):
        items = int(2 ** (i + non_sign - max_exp) + 1)
        bounds = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-(max_exp - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exp - 1) + i)) * means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    data.sort()
    return torch.tensor(data, dtype=torch.float32)
