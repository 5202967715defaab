"""Shared CLI plumbing: the typer app, error mapping, JSON output, the rich console."""

import json
import os
from typing import Any

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
