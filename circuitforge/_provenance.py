"""Provenance blocks recorded in every JSON result (model identity, versions), and atomic writes."""

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    """Library versions that produced a result."""
    from importlib.metadata import PackageNotFoundError, version

    import circuitforge

    out = {"circuitforge": circuitforge.__version__}
    for pkg in ("transformer-lens", "torch", "transformers", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:  # pragma: no cover - optional package
            out[pkg] = "absent"
    return out


def git_commit() -> str | None:
    """The commit of the circuitforge checkout this code runs from (``None`` for an installed wheel)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() + ("+dirty" if dirty else "")) if r.returncode == 0 else None


def run_info() -> dict[str, Any]:
    """When and where a result was made: UTC date, commit, library versions, Python, platform, cores, and the
    machine's 1-minute load average when it was written (timings on a loaded machine are upper bounds)."""
    import datetime
    import platform

    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "versions": versions(), "python": platform.python_version(),
            "platform": platform.platform(terse=True), "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def sha256_json(obj: Any) -> str:
    """Stable sha256 of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_text(obj: Any, path: str | os.PathLike[str] | None = None) -> str:
    """Compact-indented JSON text of ``obj``; also written atomically to ``path`` when given."""
    text = json.dumps(obj, indent=1)
    if path is not None:
        write_text_atomic(path, text + "\n")
    return text


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
