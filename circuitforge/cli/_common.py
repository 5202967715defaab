"""Shared CLI plumbing: the typer app, error mapping, JSON output, the rich console."""

import json
import os
from typing import Annotated, Any

import typer
from rich.console import Console

from circuitforge.errors import CircuitForgeError

app = typer.Typer(
    name="circuitforge",
    help="Find the circuit that carries a fact, unlearn it so it survives NF4, verify it mechanistically.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
BadInput = CircuitForgeError


def write_json(path: str | os.PathLike[str] | None, obj: Any) -> None:
    """Write ``obj`` atomically to ``path`` (``-`` for stdout); nothing when ``path`` is None."""
    if path is None:
        return
    if str(path) == "-":
        print(json.dumps(obj, indent=2))
        return
    from circuitforge._provenance import write_json_atomic

    write_json_atomic(path, obj)
    console.print(f"wrote {path}")


Device = Annotated[str, typer.Option("--device", help="where the model runs: cpu, cuda, cuda:1, mps (refused "
                                     "when not available here)")]
Dtype = Annotated[str, typer.Option("--dtype", help="weights and activations: float32, bfloat16 or float16")]


def load_model(spec: str, device: str = "cpu", dtype: str = "float32", **kw: Any) -> Any:
    """``circuitforge.models.load(spec, device=, dtype=)`` — the one model loader of every command."""
    from circuitforge.models import load

    return load(spec, device=device, dtype=dtype, **kw)


def check_device_dtype(device: str, dtype: str) -> None:
    """Refuse a bad ``--device``/``--dtype`` before anything slow starts (one line, exit 2)."""
    from circuitforge.models.loading import parse_device, parse_dtype

    parse_device(device)
    parse_dtype(dtype)
