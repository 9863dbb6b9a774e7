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
    assert edges["host.limits"] <= {"hub", "host.hardware"}  # the quotas are a leaf policy
    engine = {name: targets for name, targets in edges.items() if not name.startswith("ui")}
    assert not [name for name, targets in engine.items() if any(t.startswith("ui") for t in targets)]  # UI on top
    assert {"run_model", "export.gguf", "export.recipe", "runs.liveness", "runs.queue", "runs.ownership"} <= set(edges)
    # the tree is the architecture: few modules at the top, every package in a layer, none importing above it
    top_modules = {name for name in edges if "." not in name and not import_graph.modules()[name].name == "__init__.py"}
    assert top_modules == {"config", "presets", "charts", "hub", "rundir", "train"}
    assert import_graph.layer_breaches(edges) == []
    for package in {name.split(".")[0] for name in edges if name != "."} - top_modules:
        docstring = (ROOT / "sft_space" / package / "__init__.py").read_text().split('"""')[1]
        assert "import" in docstring.lower(), f"{package}/__init__.py does not say what it may import"


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
    (package / "low").mkdir()
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "d.py").write_text("def f():\n    from ..sub import c\n")  # deferred, still an edge
    edges = import_graph.graph(package)
    assert edges["a"] == {"b"} and edges["b"] == {"a"} and edges["sub.c"] == {"a"} and edges["low.d"] == {"sub.c"}
    assert import_graph.layer_breaches(edges, (("a", "b"), ("low",), ("sub",))) == [
        "low.d imports sub.c: a lower package imports a higher one"
    ]
    assert import_graph.layer_breaches(edges, (("a", "b"), ("sub",))) == ["low is in no layer of PACKAGE_LAYERS"]
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


def test_every_run_chart_sits_in_a_group_and_draws_a_metric_the_training_process_writes():
    """A chart is declared once (sft_space/charts.py): its group is one the run panel lays out, its name and page id
    are its own, and each metric key it draws is one RunDirCallback writes into metrics.jsonl."""
    from sft_space.charts import CHART_GROUPS, CHART_METRICS, LOSS_CHART, RUN_CHARTS

    callbacks = (ROOT / "sft_space" / "training" / "callbacks.py").read_text()
    assert {chart.group for chart in RUN_CHARTS} <= set(CHART_GROUPS)
    assert len({chart.name for chart in RUN_CHARTS}) == len({chart.elem_id for chart in RUN_CHARTS}) == len(RUN_CHARTS)
    assert "CHART_METRICS" in callbacks and set(LOSS_CHART.metrics) <= set(CHART_METRICS)
    assert {"loss", "eval_loss", "learning_rate", "grad_norm", "gpu_utilization"} <= set(CHART_METRICS)


def test_every_quota_has_its_row_in_the_hosting_notes_and_takes_fractions_where_its_type_does(monkeypatch):
    """A quota is one field of limits.Limits: docs/HOSTING.md's table names its variable, and the owner's value is
    read as its type says (a fraction of a minute stays one, a count is whole)."""
    from sft_space.host import limits

    readme = (ROOT / "docs" / "HOSTING.md").read_text()
    assert [name for name in limits.VARIABLES.values() if f"`{name}`" not in readme] == []
    monkeypatch.setenv("SFT_SPACE_RUN_MINUTES", "2.5")
    monkeypatch.setenv("SFT_SPACE_QUEUE_SIZE", "3.9")
    current = limits.current("cpu")
    assert current.run_minutes == 2.5 and current.queue_size == 3


def test_the_page_links_the_guide_on_a_space_and_the_readme_stays_a_landing_page(monkeypatch):
    """The README is a landing page (the guide, hosting notes and design live in docs/, each linked from it), and a
    Space's page links the guide in its own repository; elsewhere there is no repository to link."""
    from sft_space.ui import _guide_links

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150 and "make run" in readme and "make test" in readme
    for page in ("GUIDE.md", "HOSTING.md", "ARCHITECTURE.md", "DEVELOPING.md"):
        assert f"(docs/{page})" in readme and (ROOT / "docs" / page).is_file()
    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert _guide_links() == ""
    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "alice/sft-space")
    assert "https://huggingface.co/spaces/alice/sft-space/blob/main/docs/GUIDE.md" in _guide_links()
    monkeypatch.setenv("SPACE_ID", "alice/x) [click](https://evil.example")
    assert _guide_links() == ""
