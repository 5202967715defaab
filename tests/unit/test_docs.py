"""The CLI reference in docs/ is generated from the typer app and must match it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    subprocess.run([sys.executable, "-m", "typer", "circuitforge.cli", "utils", "docs", "--name", "circuitforge",
                    "--title", "CLI reference", "--output", str(out)], check=True, capture_output=True)
    assert out.read_text() == (ROOT / "docs" / "cli.md").read_text(), (
        "docs/cli.md is stale: regenerate with `python -m typer circuitforge.cli utils docs --name circuitforge "
        "--title 'CLI reference' --output docs/cli.md`")
