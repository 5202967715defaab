"""The package's import graph (scripts/import_graph.py): stages import only earlier stages, no module
imports another's private names, no circles — and the checker itself catches each kind of violation."""

from _scripts import load_script


def test_package_import_graph_is_clean():
    assert load_script("import_graph").check() == []


def test_checker_catches_violations(tmp_path):
    g = load_script("import_graph")
    pkg = tmp_path / "circuitforge"
    for sub in ("models", "cad", "eval"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "a.py").write_text("def f():\n    from circuitforge.eval.x import y\n")  # upward
    (pkg / "models" / "b.py").write_text("from circuitforge.models.c import g\n")
    (pkg / "models" / "c.py").write_text("from circuitforge.models.b import h\n")  # circle b <-> c
    (pkg / "cad" / "d.py").write_text("from circuitforge.models.b import _private\n")
    (pkg / "eval" / "x.py").write_text("y = 1\n")
    g.ROOT = pkg
    probs = "\n".join(g.check())
    assert "stage models imports later stage eval" in probs
    assert "circle: circuitforge.models.b -> circuitforge.models.c -> circuitforge.models.b" in probs
    assert "imports private ['_private']" in probs
