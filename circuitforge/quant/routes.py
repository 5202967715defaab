"""The two routes to a quantized model, and which tensors get quantized.

**Which tensors.** We quantize exactly what transformers' ``BitsAndBytesConfig`` quantizes: every
``torch.nn.Linear`` (and GPT-2 ``Conv1D``) module's ``weight``, except the modules transformers keeps in
full precision (``get_keys_to_not_convert``: the output embedding / ``lm_head``, anything tied to another
weight, and the last parameter's module). Embeddings, norms and all biases stay in full precision.
:func:`quantized_linear_names` lists the HF parameter names; for GPT-2 ``Conv1D`` weights (stored
``[in, out]``) transformers transposes to ``[out, in]`` before quantizing, and so do we — blocks always run
along the rows of the ``[out, in]`` matrix.

**Route (a), deployment** — :func:`load_quantized`: load a saved checkpoint folder through
``AutoModelForCausalLM.from_pretrained(quantization_config=BitsAndBytesConfig(...))`` and run it. This works
on CPU with bitsandbytes 0.50.2 and transformers 5.24 (checked). Two CPU facts (read from the installed
bitsandbytes source, and measured):

* on a CPU with AVX512-BF16 (this machine), ``Linear4bit.forward`` in eval/no-grad mode repacks the weight
  and runs a fused kernel that casts activations *and* absmax to bfloat16. ``exact_fp32=True`` (default)
  turns that off per module (``support_avx512bf16_for_cpu = False``) so the forward is
  ``dequantize_4bit`` + fp32 ``F.linear`` — the same arithmetic as route (b). ``exact_fp32=False`` runs the
  bf16 kernel (what a CPU deployment actually gets; logits then differ at bf16 precision);
* transformers' ``BitsAndBytesConfig`` has no block size: route (a) is blocksize 64 only.

**Route (b), fast** — :func:`quantized_copy`: a copy of the handle whose quantized weights are replaced
in place by the bitsandbytes ``quantize_4bit`` → ``dequantize_4bit`` round trip (or, ``backend="torch"``,
by :func:`~circuitforge.quant.fakequant.fake_quantize`, no bitsandbytes needed). The input handle is never
touched. ``int8``: the weight round trip of LLM.int8 (row-wise absmax int8 of the fp16 weight,
``int8_vectorwise_quant``); LLM.int8's activation-outlier decomposition and int8 activations are *not*
simulated, so for int8 route (b) is an approximation of route (a).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int

from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle, clone
from circuitforge.quant.codebook import Scheme
from circuitforge.quant.fakequant import fake_quantize

Backend = Literal["bnb", "torch"]


def _skeleton(handle: ModelHandle) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(handle.hf.config)


def _not_converted(model: torch.nn.Module) -> list[str]:
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        return list(get_keys_to_not_convert(model))
    except ImportError:  # pragma: no cover - older transformers
        out = model.get_output_embeddings()  # type: ignore[operator]
        return [n for n, m in model.named_modules() if m is out]


def _should_convert(name: str, patterns: list[str]) -> bool:
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module

        return bool(should_convert_module(name, patterns))
    except ImportError:  # pragma: no cover
        return not any(name == p or name.startswith(p + ".") or name.endswith(p) for p in patterns)


def _linear_modules(handle: ModelHandle) -> dict[str, bool]:
    """HF parameter name of each quantized weight → whether it is a ``Conv1D`` (stored ``[in, out]``)."""
    from transformers.pytorch_utils import Conv1D

    skel = _skeleton(handle)
    skip = _not_converted(skel)
    out: dict[str, bool] = {}
    for name, mod in skel.named_modules():
        if (type(mod) is torch.nn.Linear or isinstance(mod, Conv1D)) and _should_convert(name, skip):
            out[f"{name}.weight"] = isinstance(mod, Conv1D)
    live = handle.named_parameters()
    return {k: v for k, v in out.items() if k in live}


def quantized_linear_names(handle: ModelHandle) -> list[str]:
    """HF parameter names (as in a saved checkpoint) of the weights bitsandbytes/transformers quantize."""
    return list(_linear_modules(handle))


def quant_view(weight: Float[torch.Tensor, "a b"], is_conv1d: bool) -> Float[torch.Tensor, "out in"]:
    """The ``[out, in]`` orientation bitsandbytes quantizes (a detached view; GPT-2 ``Conv1D`` transposed)."""
    w = weight.detach()
    return w.t() if is_conv1d else w


def quantized_weights(handle: ModelHandle) -> dict[str, Float[torch.Tensor, "out in"]]:
    """HF name → detached ``[out, in]`` view of each quantized weight (no copies)."""
    params = handle.named_parameters()
    return {n: quant_view(params[n], conv) for n, conv in _linear_modules(handle).items()}


def roundtrip_bnb(w: Float[torch.Tensor, "out in"], scheme: Scheme) -> Float[torch.Tensor, "out in"]:
    """bitsandbytes' quantize → dequantize of one ``[out, in]`` weight (new tensor, same dtype)."""
    import bitsandbytes.functional as bnbf

    src = w.detach().contiguous()
    if scheme.name == "int8":
        cb, scb, _ = bnbf.int8_vectorwise_quant(src.to(torch.float16))
        return (cb.float() * (scb.float()[:, None] / 127.0)).to(w.dtype)
    q, state = bnbf.quantize_4bit(
        src, blocksize=scheme.blocksize, compress_statistics=scheme.double_quant, quant_type=scheme.name
    )
    return bnbf.dequantize_4bit(q, state).reshape(w.shape).to(w.dtype)


def roundtrip_torch(w: Float[torch.Tensor, "out in"], scheme: Scheme) -> Float[torch.Tensor, "out in"]:
    """Pure-torch round trip (bit-exact with bitsandbytes' reference semantics for nf4/fp4)."""
    if scheme.name == "int8":
        x = w.detach().to(torch.float16).float()
        scb = x.abs().amax(dim=1)
        cb = torch.round(x * (127.0 / scb.clamp(min=1e-38))[:, None]).clamp(-127, 127)
        return (cb * (scb[:, None] / 127.0)).to(w.dtype)
    return fake_quantize(w.detach().contiguous(), scheme.name, scheme.blocksize, scheme.double_quant)


def copy_handle(handle: ModelHandle, spec: str) -> ModelHandle:
    """An independent copy of ``handle`` whose ``named_parameters()`` drive its forward (``models.clone``,
    which rebuilds the model so GPT-2's q/k/v stay views of ``c_attn``). The input is never modified."""
    return clone(handle, spec=spec)


def quantized_copy(handle: ModelHandle, scheme: "Scheme | str", backend: Backend = "bnb") -> ModelHandle:
    """Route (b): an independent copy of ``handle`` whose quantized weights hold their dequantized values.

    ``backend="bnb"`` uses bitsandbytes' own ``quantize_4bit``/``dequantize_4bit`` (or int8 vectorwise)
    round trip; ``"torch"`` the pure-torch fake quantizer. The copy's spec gets ``@<scheme label>``.
    """
    sch = Scheme.parse(scheme)
    out = copy_handle(handle, spec=f"{handle.spec}@{sch.label}")
    conv = _linear_modules(out)
    _roundtrip_into(out, out, conv, list(conv), sch, backend)
    return out


def _roundtrip_into(dst: ModelHandle, src: ModelHandle, conv: dict[str, bool], names: "list[str] | set[str]",
                    scheme: Scheme, backend: Backend) -> None:
    """``dst``'s weights ``names`` := the round trip of ``src``'s (``conv``: :func:`_linear_modules`); a name
    that is not a quantized weight is copied as it is."""
    fn = roundtrip_bnb if backend == "bnb" else roundtrip_torch
    s, d = src.named_parameters(), dst.named_parameters()
    with torch.no_grad():
        for n in names:
            if n in conv:
                wq = fn(quant_view(s[n], conv[n]), scheme)
                d[n].copy_(wq.t() if conv[n] else wq)
            else:
                d[n].copy_(s[n].detach())
    dst.invalidate_identity()


class QuantizedMirror:
    """A route-(b) copy of ``source`` kept in step with it while only some of its weights change: built once
    (:func:`quantized_copy`), then :meth:`refresh` re-quantizes just the named weights. Used by loops that
    read the quantized model after every small edit (MANSU's NF4 stop rule): re-quantizing a few matrices
    instead of copying and quantizing the whole model. After ``refresh(names)`` the mirror's weights equal a
    fresh ``quantized_copy(source, scheme, backend)`` whenever every weight changed since the last refresh is in
    ``names`` (tested bit for bit)."""

    def __init__(self, source: ModelHandle, scheme: "Scheme | str", backend: Backend = "torch") -> None:
        self.source, self.scheme, self.backend = source, Scheme.parse(scheme), backend
        self.handle = quantized_copy(source, self.scheme, backend)
        self._conv = _linear_modules(self.handle)

    def refresh(self, names: "set[str] | list[str]") -> ModelHandle:
        """Re-quantize the weights ``names`` from the source (others are left as they are); the mirror."""
        _roundtrip_into(self.handle, self.source, self._conv, names, self.scheme, self.backend)
        return self.handle


@dataclass(eq=False)
class QuantizedModel:
    """A model loaded through transformers + bitsandbytes (route a): ``.logits(tokens)`` like a handle."""

    hf: Any = field(repr=False)
    scheme: Scheme
    folder: str
    exact_fp32: bool

    @torch.no_grad()
    def logits(self, tokens: Int[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, "batch pos vocab"]:
        return self.hf(input_ids=tokens).logits.float()

    def quantized_modules(self) -> list[str]:
        """Names of the modules bitsandbytes replaced (``Linear4bit`` / ``Linear8bitLt``)."""
        return [n for n, m in self.hf.named_modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]


def bnb_config(scheme: "Scheme | str") -> Any:
    """The ``transformers.BitsAndBytesConfig`` for a scheme (compute dtype float32)."""
    from transformers import BitsAndBytesConfig

    sch = Scheme.parse(scheme)
    if sch.name == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if sch.blocksize != 64:
        raise CircuitForgeError(f"{sch.label}: transformers' BitsAndBytesConfig only supports block size 64")
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=sch.name, bnb_4bit_use_double_quant=sch.double_quant,
        bnb_4bit_compute_dtype=torch.float32,
    )


def load_quantized(
    folder: str | os.PathLike[str], scheme: "Scheme | str", exact_fp32: bool = True
) -> QuantizedModel:
    """Route (a): load a saved HF checkpoint folder with ``BitsAndBytesConfig`` on CPU (safetensors only,
    no remote code). ``exact_fp32`` — see the module docstring."""
    from transformers import AutoModelForCausalLM

    from circuitforge.models.hf import quiet

    sch = Scheme.parse(scheme)
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise CircuitForgeError(f"{folder}: not a HuggingFace checkpoint folder (no config.json)")
    try:
        with quiet():
            model = AutoModelForCausalLM.from_pretrained(
                path, quantization_config=bnb_config(sch), dtype=torch.float32, device_map="cpu",
                use_safetensors=True, trust_remote_code=False,
            )
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        raise CircuitForgeError(f"{folder}: could not load with {sch.label}: {str(e).splitlines()[0]}") from e
    model.eval()
    if exact_fp32:
        for m in model.modules():
            if hasattr(m, "support_avx512bf16_for_cpu"):
                setattr(m, "support_avx512bf16_for_cpu", False)  # noqa: B010
    return QuantizedModel(hf=model, scheme=sch, folder=str(path), exact_fp32=exact_fp32)
