"""Plumbing shared by the unlearning methods: settings validation and parsing, the caller-state guard,
parameter scopes, the masked gradient loop and the result assembly.

Every method edits a :func:`~circuitforge.models.clone` of the input handle. The clone is kept in
``eval()`` mode while training (no dropout, so runs are deterministic given the seed); at the end all its
parameters are ``requires_grad=True`` again (as :func:`~circuitforge.models.load` returns them) and its
gradients are cleared.
"""

import contextlib
import dataclasses
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from circuitforge.data import Task, evaluate
from circuitforge.errors import CircuitForgeError
from circuitforge.models import ModelHandle, clone
from circuitforge.surgery.result import UnlearnResult, edit_counts

S = TypeVar("S")

# -- settings ------------------------------------------------------------------------------------------


def check(cond: bool, msg: str) -> None:
    """Raise ``ValueError(msg)`` unless ``cond`` (used in settings ``__post_init__``)."""
    if not cond:
        raise ValueError(msg)


def check_literals(obj: Any) -> None:
    """Check every ``Literal[...]`` field of a settings dataclass holds an allowed value."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        if typing.get_origin(tp) is Literal:
            allowed = typing.get_args(tp)
            check(getattr(obj, f.name) in allowed, f"{f.name} must be one of {allowed}, not {getattr(obj, f.name)!r}")


def make_settings(cls: type[S], **kw: Any) -> S:
    """Build a settings dataclass, turning unknown names and failed validation into :class:`CircuitForgeError`."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(kw) - names)
    if unknown:
        raise CircuitForgeError(f"unknown setting(s) {unknown} for {cls.__name__} (known: {sorted(names)})")
    try:
        return cls(**kw)
    except (ValueError, TypeError) as e:
        raise CircuitForgeError(f"{cls.__name__}: {e}") from e


def _convert(text: str, tp: Any, name: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            with contextlib.suppress(ValueError, CircuitForgeError):
                return _convert(text, a, name)
        raise CircuitForgeError(f"setting {name}: cannot parse {text!r} as {tp}")
    if origin is Literal:
        for a in args:
            if str(a) == text:
                return a
        raise CircuitForgeError(f"setting {name}: {text!r} is not one of {args}")
    if origin is tuple:
        inner = args[0] if args else str
        return tuple(_convert(x.strip(), inner, name) for x in text.split(",") if x.strip())
    if tp is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise CircuitForgeError(f"setting {name}: {text!r} is not a boolean")
    if tp in (int, float, str):
        try:
            return tp(text)
        except ValueError as e:
            raise CircuitForgeError(f"setting {name}: cannot parse {text!r} as {tp.__name__}") from e
    raise CircuitForgeError(f"setting {name}: cannot be set from the command line")


def parse_settings(cls: type, pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "circuit_nodes=a0.h1,m2"]`` → typed keyword arguments for ``cls``."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for p in pairs:
        key, sep, val = p.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in hints:
            raise CircuitForgeError(f"--set {p!r}: expected NAME=VALUE with NAME one of {sorted(hints)}")
        out[key] = _convert(val.strip(), hints[key], key)
    return out


@dataclass(frozen=True)
class LoopSettings:
    """Settings shared by the gradient baselines (GA, GradDiff, NPO, RMU, SURE).

    Attributes:
        lr: Adam learning rate.
        max_steps: optimizer steps at most.
        batch_size: forget (and retain) rows per step.
        eval_every: evaluate forget accuracy every this many steps (early stop).
        target_forget_acc: stop as soon as forget accuracy is ≤ this (default 0.25 = chance with three
            distractors); this early stop is what keeps the baselines from collapsing the model.
        max_grad_norm: clip the gradient norm (None: no clipping).
        scope: which parameters train: ``"linear"`` (every 2-D weight inside the transformer blocks,
            i.e. the attention and MLP matrices) or ``"all"`` (every parameter, embeddings included).
    """

    lr: float = 1e-5
    max_steps: int = 60
    batch_size: int = 8
    eval_every: int = 2
    target_forget_acc: float = 0.25
    max_grad_norm: float | None = 1.0
    scope: Literal["linear", "all"] = "linear"

    def __post_init__(self) -> None:
        check_literals(self)
        check(self.lr > 0, "lr must be > 0")
        check(self.max_steps >= 1, "max_steps must be ≥ 1")
        check(self.batch_size >= 1, "batch_size must be ≥ 1")
        check(self.eval_every >= 1, "eval_every must be ≥ 1")
        check(0.0 <= self.target_forget_acc <= 1.0, "target_forget_acc must be in [0, 1]")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be > 0 or None")


# -- state -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def preserved(handle: ModelHandle) -> Iterator[None]:
    """Restore ``handle``'s train/eval mode and every parameter's ``requires_grad`` on exit."""
    training = handle.bridge.training
    flags = [(p, p.requires_grad) for p in handle.hf.parameters()]
    try:
        yield
    finally:
        handle.bridge.train(training)
        for p, f in flags:
            p.requires_grad_(f)


def scoped_params(handle: ModelHandle, scope: str) -> dict[str, torch.nn.Parameter]:
    """HF name → parameter for a scope (see :class:`LoopSettings`)."""
    params = handle.named_parameters()
    if scope == "all":
        return params
    prefix = ("model.layers.", "transformer.h.")
    return {n: p for n, p in params.items() if n.startswith(prefix) and n.endswith(".weight") and p.dim() == 2}


@contextlib.contextmanager
def trainable(handle: ModelHandle, params: dict[str, torch.nn.Parameter]) -> Iterator[None]:
    """Only ``params`` require grad inside the block; the model stays in eval mode; grads cleared on entry
    (a ``.grad`` left by an earlier backward elsewhere would otherwise be accumulated into the first one
    taken inside) and on exit."""
    handle.bridge.eval()
    keep = {id(p) for p in params.values()}
    for p in handle.hf.parameters():
        p.grad = None
        p.requires_grad_(id(p) in keep)
    try:
        yield
    finally:
        for p in handle.hf.parameters():
            p.grad = None
            p.requires_grad_(True)


@dataclass
class Run:
    """A method run in progress: the clone being edited and what is needed to report on it."""

    base: ModelHandle
    edited: ModelHandle
    base_state: dict[str, torch.Tensor]
    t0: float

    @classmethod
    def start(cls, handle: ModelHandle) -> "Run":
        t0 = time.time()
        return cls(handle, clone(handle), {k: v.detach().cpu().clone() for k, v in handle.state_dict().items()}, t0)

    def finish(
        self, method: str, settings: Any, seed: int, forget: Task, retain: Task, history: list[dict[str, Any]],
        stop_reason: str, mask: dict[str, torch.Tensor] | None = None, diagnostics: dict[str, Any] | None = None,
    ) -> UnlearnResult:
        e = self.edited
        e.bridge.eval()
        for p in e.hf.parameters():
            p.grad = None
            p.requires_grad_(True)
        e.invalidate_identity()
        stats = edit_counts(self.base_state, e, mask)
        diag = dict(diagnostics or {})
        diag["final"] = {"forget_acc": evaluate(e, forget).accuracy, "retain_acc": evaluate(e, retain).accuracy}
        return UnlearnResult(
            handle=e, method=method, settings=dataclasses.asdict(settings), seed=seed, base=self.base.identity(),
            forget=forget.identity(), retain=retain.identity(), mask_stats=stats, loss_history=history,
            stop_reason=stop_reason, diagnostics=diag, wall_time_s=time.time() - self.t0,
        )


# -- the gradient loop -------------------------------------------------------------------------------


LossFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


def gradient_loop(
    edited: ModelHandle, params: dict[str, torch.nn.Parameter], loss_fn: LossFn, s: LoopSettings, forget: Task,
    masks: dict[str, torch.Tensor] | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """Adam on ``loss_fn(step)`` (minimised) over ``params`` of ``edited``, early-stopped on forget accuracy.

    With ``masks`` (HF name → bool tensor of the parameter's shape) the gradient is multiplied by the mask
    before clipping and, after every step, every entry outside the mask is copied back from its value
    before training, so the parameters outside the mask are bit-for-bit unchanged.
    Returns ``(history, stop_reason)``.
    """
    frozen = {n: p.detach().clone() for n, p in params.items()} if masks is not None else {}
    if masks is not None:
        missing = sorted(set(masks) - set(params))
        if missing:
            raise CircuitForgeError(f"mask names not among the trainable parameters: {missing[:3]}")
        params = {n: p for n, p in params.items() if n in masks and bool(masks[n].any())}
        if not params:
            raise CircuitForgeError("the mask selects no parameter")
    acc = evaluate(edited, forget).accuracy
    history: list[dict[str, Any]] = [{"step": 0, "forget_acc": acc}]
    if acc <= s.target_forget_acc:
        return history, "forget_target_reached"
    with trainable(edited, params):
        opt = torch.optim.Adam(list(params.values()), lr=s.lr)
        for step in range(1, s.max_steps + 1):
            opt.zero_grad(set_to_none=True)
            loss, logs = loss_fn(step)
            loss.backward()
            if masks is not None:
                for n, p in params.items():
                    if p.grad is not None:
                        p.grad.mul_(masks[n].to(p.grad.device, p.grad.dtype))
            if s.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(list(params.values()), s.max_grad_norm)
            opt.step()
            if masks is not None:
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(torch.where(masks[n].to(p.device), p, frozen[n].to(p.device)))
            rec: dict[str, Any] = {"step": step, "loss": float(loss.detach()), **logs}
            if step % s.eval_every == 0 or step == s.max_steps:
                with torch.no_grad():
                    rec["forget_acc"] = evaluate(edited, forget).accuracy
                history.append(rec)
                if rec["forget_acc"] <= s.target_forget_acc:
                    return history, "forget_target_reached"
            else:
                history.append(rec)
    return history, "max_steps"


def forward(handle: ModelHandle, tokens: torch.Tensor) -> torch.Tensor:
    """Logits of ``handle`` for ``tokens`` (on the handle's device)."""
    return handle.logits(tokens.to(handle.device))
