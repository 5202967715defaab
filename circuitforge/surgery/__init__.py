"""Stage 5 — surgery: unlearning edits, MANSU and the baselines, one file each, one signature.

>>> from circuitforge.surgery import unlearn                                  # doctest: +SKIP
>>> res = unlearn(handle, forget, retain, method="mansu", seed=0)             # doctest: +SKIP
>>> res.stop_reason, res.mask_stats["changed_share"], res.diagnostics["code_flips"]["code_flip_rate"]  # doctest: +SKIP
>>> res.save("out/mansu")                                                      # doctest: +SKIP

Methods (``METHODS``): ``mansu`` (Mechanistic-Aligned Null-Space Unlearning, arXiv 2605.15138; see
:mod:`.mansu` and :mod:`.mansu_steps`), ``ga``, ``graddiff``, ``npo`` (Zhang et al. 2024), ``rmu`` (Li et
al. 2024, WMDP), ``sure`` (saliency mask + large learning rate, Zhang et al. 2025). Every method module
has ``run(handle, forget, retain, *, seed=0, **settings) -> UnlearnResult`` and a frozen ``Settings``
dataclass; every method edits a clone and leaves the input handle (weights, train/eval mode,
``requires_grad``) as it found it.
"""

from importlib import import_module
from typing import Any

from circuitforge.data import Task
from circuitforge.errors import CircuitForgeError
from circuitforge.models.handle import ModelHandle
from circuitforge.surgery._common import parse_settings, preserved
from circuitforge.surgery.result import UnlearnResult

METHODS = ("mansu", "ga", "graddiff", "npo", "rmu", "sure")


def _module(method: str) -> Any:
    if method not in METHODS:
        raise CircuitForgeError(f"unknown unlearning method {method!r} (choose from {', '.join(METHODS)})")
    return import_module(f"circuitforge.surgery.{method}")


def settings_class(method: str) -> type:
    """The frozen settings dataclass of ``method``."""
    return _module(method).Settings  # type: ignore[no-any-return]


def unlearn(
    handle: ModelHandle, forget: Task, retain: Task, method: str = "mansu", *, seed: int = 0, **settings: Any
) -> UnlearnResult:
    """Unlearn ``forget`` from a copy of ``handle`` while keeping ``retain``; dispatch to ``method``.

    ``settings`` are the method's settings fields (see ``settings_class(method)``); unknown names or
    invalid values raise :class:`CircuitForgeError`. The input handle is never modified, and its
    train/eval mode and ``requires_grad`` flags are restored even when the method fails.
    """
    mod = _module(method)
    if len(forget) == 0 or len(retain) == 0:
        raise CircuitForgeError("forget and retain tasks must not be empty")
    with preserved(handle):
        return mod.run(handle, forget, retain, seed=seed, **settings)  # type: ignore[no-any-return]


__all__ = ["METHODS", "UnlearnResult", "parse_settings", "settings_class", "unlearn"]
