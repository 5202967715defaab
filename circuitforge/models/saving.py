"""Save a (possibly edited) handle as a plain HF safetensors checkpoint plus ``circuitforge.json``.

``bridge.original_model.save_pretrained`` fails on bridged models (GPT-2: strided q/k/v views; Llama:
shared-tensor aliases), so we rebuild a fresh HF model from the config, load the live weights into it and
save that. The folder is written to a temp sibling and renamed into place; an existing folder is kept
unless ``overwrite=True``. Never call this after ``enable_compatibility_mode()`` (folded weights).
"""

import os
from pathlib import Path
from typing import Any

from circuitforge._provenance import versions, write_json_atomic
from circuitforge.errors import CircuitForgeError
from circuitforge.models.cache import replace_dir
from circuitforge.models.handle import ModelHandle

MANIFEST = "circuitforge.json"


def save(
    handle: ModelHandle,
    folder: str | os.PathLike[str],
    manifest: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``handle``'s live weights, tokenizer and a manifest to ``folder`` atomically.

    Returns the folder. The manifest records the model identity, the architecture, library versions and
    whatever the caller passes (method, settings, seed, base identity...).
    """
    from transformers import AutoModelForCausalLM

    out = Path(folder)
    if out.exists() and not overwrite:
        raise CircuitForgeError(f"{folder}: already exists (pass overwrite=True / --overwrite to replace it)")
    if getattr(handle.bridge, "_compatibility_mode", False) or getattr(handle.bridge, "_weights_processed", False):
        raise CircuitForgeError("refusing to export a bridge after enable_compatibility_mode() (folded weights)")
    hf = handle.hf
    sd = handle.state_dict()
    dtype = next(hf.parameters()).dtype
    fresh = AutoModelForCausalLM.from_config(hf.config, dtype=dtype)
    fresh.load_state_dict({k: sd[k].detach().contiguous() for k in fresh.state_dict()}, strict=True)
    def build(tmp: Path) -> None:
        fresh.save_pretrained(tmp, safe_serialization=True)
        handle.tokenizer.save_pretrained(tmp)
        handle.invalidate_identity()
        body = {
            "format": "circuitforge.checkpoint/1",
            "model": handle.identity(),
            "architecture": handle.architecture(),
            "versions": versions(),
            **(manifest or {}),
        }
        write_json_atomic(tmp / MANIFEST, body)

    replace_dir(out, build)
    return out
