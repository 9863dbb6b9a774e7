"""The layout keeps its rules, and docs/ARCHITECTURE.md's import graph is the code's (scripts/import_graph.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from helpers import ROOT

spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_no_import_cycle_no_long_module_and_the_document_draws_the_code():
    """What a newcomer reads in docs/ARCHITECTURE.md is the code's own graph; no module imports itself around a
    circle, none is over 450 lines (a longer one mixes concerns)."""
    result = subprocess.run(
        [sys.executable, "scripts/import_graph.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    edges = import_graph.graph()
    assert "limits" in edges and edges["limits"] <= {"hub", "hardware"}  # the quotas are a leaf policy
    engine = {name: targets for name, targets in edges.items() if not name.startswith("ui")}
    assert not [name for name, targets in engine.items() if any(t.startswith("ui") for t in targets)]  # UI on top
    assert {"run_model", "export.gguf", "export.recipe", "liveness", "run_queue", "ownership"} <= set(edges)


def test_the_check_finds_a_cycle_a_long_module_an_import_of_nothing_and_a_stale_document(tmp_path, monkeypatch):
    """The check can fail: a package of three modules where a -> b -> a, c is 451 lines and imports a module that
    is not there, and a document whose graph is the previous code's."""
    package = tmp_path / "sft_space"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n")
    (package / "sub" / "c.py").write_text("from .gone import y\nfrom ..a import z\n" + "\n" * 449)
    edges = import_graph.graph(package)
    assert edges["a"] == {"b"} and edges["b"] == {"a"} and edges["sub.c"] == {"a"}
    assert import_graph.cycles(edges) == [["a", "b"]]
    assert import_graph.long_modules(package) == {"sub.c": 451}
    unresolved: list[str] = []
    import_graph.graph(package, unresolved)
    assert unresolved == ["sub.c: from .gone import ... (line 1)"]

    doc = tmp_path / "ARCHITECTURE.md"
    doc.write_text(f"# x\n{import_graph.START}\nold\n{import_graph.END}\ntail\n")
    monkeypatch.setattr(import_graph, "PACKAGE", package)
    monkeypatch.setattr(import_graph, "DOC", doc)
    found = import_graph.problems()
    assert any("import cycle: a <-> b" in line for line in found)
    assert any("sub.c has 451 lines" in line for line in found)
    assert any("from .gone" in line for line in found)
    assert any("differs from the code" in line for line in found)
    import_graph.write(doc)
    assert import_graph.documented(doc) == import_graph.render(import_graph.graph(package))
    assert doc.read_text().endswith("tail\n")
