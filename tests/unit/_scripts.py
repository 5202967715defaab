"""Import a file from ``scripts/`` or ``benchmarks/`` as a module (test helper, not a test): neither folder
is a package."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str, folder: str = "scripts"):
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def load_benchmark(name: str):
    return load_script(name, "benchmarks")
