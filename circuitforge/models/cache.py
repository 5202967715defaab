"""Where circuitforge keeps converted models: ``$CIRCUITFORGE_CACHE`` or the user's cache dir."""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("CIRCUITFORGE_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("circuitforge"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def replace_dir(target: Path, build: Callable[[Path], None]) -> Path:
    """Build a folder by calling ``build(tmp)`` on a temp folder beside ``target``, then rename it into
    place (replacing an existing ``target``). A crash mid-build leaves no half-written ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """A cache folder built once: returned as is when complete, else built by :func:`replace_dir` with a
    ``.complete`` marker, so a crash mid-build leaves no half-written cache entry."""
    if target.is_dir() and (target / ".complete").exists():
        return target

    def build_marked(tmp: Path) -> None:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")

    return replace_dir(target, build_marked)
