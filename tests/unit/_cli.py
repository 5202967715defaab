"""Run the ``circuitforge`` CLI in-process through its console entry point (test helper, not a test):
returns ``(exit code, stdout, stderr)`` as a user would see them, error mapping included."""

import sys


def run_cli(capsys, *args):  # type: ignore[no-untyped-def]
    from circuitforge.cli import main

    old = sys.argv
    sys.argv = ["circuitforge", *args]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(err: str) -> str:
    """The single ``error:`` line of a refusal (no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]
