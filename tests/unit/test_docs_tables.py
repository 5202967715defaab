"""Every result table in the docs is the rendering of a committed JSON (scripts/docs_tables.py)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _mod():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def test_docs_tables_match_their_json():
    m = _mod()
    srcs = m.sources()
    assert {"docs/attribution.md", "docs/quant.md"} <= {d for d, _ in srcs}
    assert m.update(check=True) == ([], []), "run: python scripts/docs_tables.py"


def test_render_changes_with_the_json(tmp_path):
    m = _mod()
    doc = {"table": {"columns": ["a", "b|c"], "rows": [[1.23456, None]]}, "command": "python x.py"}
    text = m.render(doc)
    assert "| 1.235 | – |" in text and "b\\|c" in text and "`python x.py`" in text
    doc["table"]["rows"][0][0] = 2.0
    assert m.render(doc) != text
    json.dumps(doc)
