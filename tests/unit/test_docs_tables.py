"""Every result table in the docs is the rendering of a committed JSON (scripts/docs_tables.py)."""

import json

from _scripts import load_script


def test_docs_tables_match_their_json():
    m = load_script("docs_tables")
    srcs = m.sources()
    assert {"docs/attribution.md", "docs/quant.md"} <= {d for d, _ in srcs}
    assert m.update(check=True) == ([], []), "run: python scripts/docs_tables.py"


def test_render_changes_with_the_json(tmp_path):
    m = load_script("docs_tables")
    doc = {"table": {"columns": ["a", "b|c"], "rows": [[1.23456, None]]}, "command": "python x.py"}
    text = m.render(doc)
    assert "| 1.235 | – |" in text and "b\\|c" in text and "`python x.py`" in text
    doc["table"]["rows"][0][0] = 2.0
    assert m.render(doc) != text
    json.dumps(doc)
