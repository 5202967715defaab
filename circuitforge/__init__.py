"""circuitforge: quantization-permanent unlearning via circuit attribution.

Find the circuit that carries a piece of knowledge (attribution patching), edit only that circuit with
updates large enough to survive NF4 quantization (MANSU), and verify the result mechanistically
(Circuit Attribution Divergence). Reference: "Forgetting That Sticks: Quantization-Permanent Unlearning
via Circuit Attribution" (arXiv 2605.15138).

>>> import circuitforge as cf
>>> handle = cf.load("tiny-llama")              # doctest: +SKIP
>>> task = cf.load_task("builtin:forget")        # doctest: +SKIP

Submodules load lazily, so ``import circuitforge`` stays cheap and never imports bitsandbytes or plotly.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load": "circuitforge.models",
    "ModelHandle": "circuitforge.models",
    "component_params": "circuitforge.models",
    "save": "circuitforge.models",
    "load_task": "circuitforge.data",
    "Task": "circuitforge.data",
    "evaluate": "circuitforge.data",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'circuitforge' has no attribute {name!r}")
