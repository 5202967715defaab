"""The ``circuitforge`` command line (typer). Every command is a thin layer over the public functions.

Exit codes: 0 ok / pass, 1 a check failed, 2 bad input (one-line message on stderr), 3 an internal error
(one line naming it; ``CIRCUITFORGE_DEBUG=1`` shows the traceback). A crash never exits 1, so a script
cannot mistake it for a failed check.
Command groups live in one module each and register themselves on :data:`app`.
"""

import os
import sys

import typer

from circuitforge.cli import _common

# each module adds its commands to `app` on import
from circuitforge.cli import models as _models  # noqa: E402,F401
from circuitforge.cli._common import app

for _mod in ("quant", "attribution", "surgery", "verify", "bench", "demo"):
    try:
        __import__(f"circuitforge.cli.{_mod}")
    except ModuleNotFoundError as _e:  # a stage not built yet
        if _e.name != f"circuitforge.cli.{_mod}":
            raise


def main() -> None:
    """Console-script entry point: runs the app and maps :class:`CircuitForgeError` to exit 2."""
    try:
        rc = app(standalone_mode=False)  # click returns the code of a typer.Exit instead of raising
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except _common.BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if os.environ.get("CIRCUITFORGE_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0]
        print(f"internal error: {type(e).__name__}: {first} (CIRCUITFORGE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        sys.exit(3)


__all__ = ["app", "main"]
