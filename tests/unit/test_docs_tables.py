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


def test_a_marker_can_name_the_table_key(tmp_path, monkeypatch):
    """``<!-- table: PATH#KEY -->`` renders the table under KEY; a missing key is reported, not rendered."""
    m = load_script("docs_tables")
    (tmp_path / "docs").mkdir()
    (tmp_path / "r.json").write_text(json.dumps({"command": "python y.py", "table": [1, 2],
                                                 "other": {"columns": ["x"], "rows": [[7]]}}))
    page = tmp_path / "docs" / "p.md"
    page.write_text("<!-- table: r.json#other -->\n<!-- /table -->\n<!-- table: r.json#nope -->\n<!-- /table -->\n")
    monkeypatch.setattr(m, "ROOT", tmp_path)
    monkeypatch.setattr(m, "files", lambda: [page])
    stale, missing = m.update(check=False)
    assert stale == ["docs/p.md"] and len(missing) == 1 and "'nope'" in missing[0]
    assert "| x |\n|---|\n| 7 |" in page.read_text()
