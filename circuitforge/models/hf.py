"""The HuggingFace layer under the loaders: wrap a transformers model in a bridge, read a GGUF, clone.

Lowest module of :mod:`circuitforge.models` after :mod:`.handle` (it imports only the handle), so that the
spec loaders (:mod:`.loading`, :mod:`.gguf_wheels`, :mod:`.tiny`) and later stages can all use it without
importing each other in a circle.
"""

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import Family, ModelHandle

# HF ``model_type`` → parameter-layout family. Qwen2 (q/k/v biases) and Gemma 3 text models (q/k norms,
# norms before and after attention and MLP, embeddings scaled by sqrt(d_model)) keep Llama's parameter names
# (``model.layers.L.self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``), so they share its family.
SUPPORTED = {"llama": "llama", "qwen2": "llama", "gemma3_text": "llama", "gpt2": "gpt2"}


@contextlib.contextmanager
def no_init_weights() -> Any:
    """Skip the random initialisation of a model built from a config (its weights are loaded next)."""
    try:
        from transformers.initialization import no_init_weights as ctx
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights as ctx  # type: ignore[no-redef,attr-defined]
    with ctx():
        yield


@contextlib.contextmanager
def quiet() -> Any:
    """Silence the chatter of transformers / TransformerLens while booting."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    loggers = [logging.getLogger(n) for n in ("transformers", "transformer_lens", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def family_of(model_type: str, where: str) -> Family:
    if model_type not in SUPPORTED:
        raise CircuitForgeError(
            f"{where}: model type {model_type!r} is not supported (supported: {', '.join(SUPPORTED)})"
        )
    return SUPPORTED[model_type]  # type: ignore[return-value]


def from_hf(hf_model: Any, tokenizer: Any, spec: str, source_dir: str | None = None) -> ModelHandle:
    """Wrap an already-loaded HF causal LM and tokenizer in a bridge and a handle (eval mode, fp32 kept)."""
    from transformer_lens.model_bridge import TransformerBridge

    cfg = hf_model.config
    family = family_of(cfg.model_type, spec)
    with quiet():
        bridge = TransformerBridge.boot_transformers(
            source_dir or spec, hf_model=hf_model, tokenizer=tokenizer, device="cpu"
        )
    bridge.eval()
    tc = bridge.cfg
    n_heads = int(tc.n_heads)
    n_kv = int(getattr(tc, "n_key_value_heads", None) or n_heads)
    assert tc.d_mlp is not None
    return ModelHandle(
        bridge=bridge,
        spec=spec,
        family=family,
        n_layers=int(tc.n_layers),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(tc.d_head),
        d_model=int(tc.d_model),
        d_mlp=int(tc.d_mlp),
        d_vocab=int(tc.d_vocab),
        source_dir=source_dir,
        model_type=str(cfg.model_type),
    )


def load_gguf(file: str | os.PathLike[str], spec: str | None = None) -> tuple[Any, Any]:  # noqa: ARG001
    """Load a ``.gguf`` file through transformers (dequantized to fp32); returns ``(hf_model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(file)
    if not path.is_file():
        raise CircuitForgeError(f"{file}: no such GGUF file")
    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:
        raise CircuitForgeError(f"{file}: could not read GGUF: {str(e).splitlines()[0]}") from e
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.eval()
    return model, tok


def clone(handle: ModelHandle, spec: str | None = None) -> ModelHandle:
    """An independent copy of ``handle``: edit the copy, never the input.

    The copy is rebuilt (fresh HF model from the config, weights copied, tied weights re-tied, a new
    bridge booted) rather than deep-copied, because a deep copy breaks the bridge's weight views (GPT-2's
    q/k/v are views of ``c_attn``) and fails after a forward pass with gradients on.
    """
    import copy

    from transformers import AutoModelForCausalLM

    state = handle.state_dict()
    with no_init_weights():
        fresh: Any = AutoModelForCausalLM.from_config(copy.deepcopy(handle.hf.config), dtype=next(handle.hf.parameters()).dtype)
    fresh.load_state_dict({k: v.detach() for k, v in state.items()}, strict=True)
    if getattr(fresh.config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.eval()
    return from_hf(fresh, handle.tokenizer, spec=spec or handle.spec, source_dir=handle.source_dir)


def adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel where it exists (CPU and CUDA tensors of float32 / float16 / bfloat16:
    the same update; on CPU 0.088 s vs 0.61 s a step for SmolLM2's 135 M weights, 0.60 s vs 2.58 s for Gemma 3's
    268 M, ``benchmarks/relearn_step.py``), the per-tensor loop otherwise. Used by the relearning attack and the benign fine-tune;
    the unlearning methods keep the per-tensor loop (their benchmark cells are rebuilt and compared by
    sha256)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)
