"""Who imports whom in sft_space, drawn from the code itself, and the two rules the layout keeps.

    python scripts/import_graph.py            print the graph (as docs/ARCHITECTURE.md shows it) and any breach
    python scripts/import_graph.py --write    rewrite the graph's block in docs/ARCHITECTURE.md
    python scripts/import_graph.py --check    exit 1 on an import cycle, a module over the line limit, a lower
                                              package importing a higher one (PACKAGE_LAYERS), or a
                                              docs/ARCHITECTURE.md whose graph differs from the code's

Every import counts, also one inside a function (deferred imports keep start-up fast; they are still a
dependency). `from .data import x` depends on the package `data` (its __init__, which imports its modules).
tests/test_architecture.py runs the check, so the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sft_space"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
MAX_LINES = 450  # a module longer than this mixes concerns: split it along them
START, END = "<!-- import-graph:start -->", "<!-- import-graph:end -->"
# sft_space's packages by concern, lowest first: a module may import its own layer and those below, never above.
# The first layer is the declarations every layer reads (single modules at the package's top); the last is the
# `python -m sft_space.train` command line, kept at the address users type.
PACKAGE_LAYERS = (
    ("config", "presets", "charts", "hub", "rundir", "demo_data"),
    ("host",),  # what the machine is and what its owner allows
    ("models",),  # a model choice, before it is used
    ("data",),  # datasets, from a choice to TRL's rows
    ("run_model",),  # a trained run's model: loading, merging, generating, chat
    ("judging",),  # how good a model is: evaluation, baselines, scorers, health
    ("export",),  # a run taken elsewhere: the recipe, merged weights, GGUF
    ("publishing",),  # pushes to the Hub: model cards, backups, Jobs
    ("training",),  # the training process and a GPU slot
    ("runs",),  # a run's life in the app: start, queue, liveness, ownership, clean-up, restore
    ("ui",),  # Gradio
    ("train",),
)


def modules(package: Path | None = None) -> dict[str, Path]:
    """Dotted name relative to the package ('runs', 'data.sources', 'data' for its __init__) -> file."""
    package = package or PACKAGE
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts) or "."] = path
    return found


def _target(name: str, node: ast.ImportFrom, is_package: bool) -> list[str]:
    """The dotted names (relative to the package) an import statement of module `name` may refer to."""
    here = [] if name == "." else name.split(".")
    if node.level == 0:  # absolute: only sft_space.* counts
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE.name:
            return []
        base = parts[1:]
    else:
        base = here if is_package else here[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        base = base + (node.module.split(".") if node.module else [])
    return [".".join(base + [alias.name]) for alias in node.names] + [".".join(base) or "."]


def graph(package: Path | None = None, unresolved: list[str] | None = None) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (anywhere in its code). unresolved: collects the relative
    imports that name no module of the package (an import a move left behind fails only when its code runs)."""
    package = package or PACKAGE
    known = modules(package)
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                found = _target(name, node, path.name == "__init__.py")
                if not found:
                    continue
                *names, base = found
                hits = [n for n in names if n in known]
                targets.update(hits if hits else ([base] if base in known else []))
                if not hits and base not in known and node.level and unresolved is not None:
                    unresolved.append(
                        f"{name}: from {'.' * node.level}{node.module or ''} import ... (line {node.lineno})"
                    )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == PACKAGE.name and ".".join(parts[1:]) in known:
                        targets.add(".".join(parts[1:]))
        targets.discard(name)
        targets.discard(".")  # the package's own __init__ (home(), Progress) is below everything
        edges[name] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a circle (Tarjan's strongly connected sets)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.append(other)
                if other == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(1000, 10 * len(edges)))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def long_modules(package: Path | None = None, limit: int = MAX_LINES) -> dict[str, int]:
    """Modules over the line limit, with their length."""
    lengths = {name: len(path.read_text().splitlines()) for name, path in modules(package or PACKAGE).items()}
    return {name: count for name, count in sorted(lengths.items()) if count > limit}


def layers(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's layer: 0 imports nothing of ours, otherwise one above the highest module it imports."""
    depth: dict[str, int] = {}

    def of(node: str, seen: frozenset = frozenset()) -> int:
        if node not in depth:
            below = [of(other, seen | {node}) for other in edges.get(node, ()) if other not in seen]
            depth[node] = 1 + max(below) if below else 0
        return depth[node]

    for node in edges:
        of(node)
    return depth


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between top-level packages (and top-level modules): who may be found importing whom."""
    tops: dict[str, set[str]] = {}
    for node, targets in edges.items():
        if node == ".":
            continue
        top = node.split(".")[0]
        tops.setdefault(top, set()).update(t.split(".")[0] for t in targets)
        tops[top].discard(top)
    return tops


def render(edges: dict[str, set[str]]) -> str:
    """The graph as the document shows it: the packages by layer (PACKAGE_LAYERS, highest first) with the packages
    each imports, then every module, highest layer first, with what it imports."""
    depth = layers(edges)
    tops = package_edges(edges)
    lines = ["```", "-- packages, highest first (a package imports only its own layer and those below)"]
    for names in reversed(PACKAGE_LAYERS):
        for top in (name for name in names if name in tops):
            label = top + "/" if (PACKAGE / top).is_dir() else top
            lines.append(f"{label:22} -> {', '.join(sorted(tops[top]))}" if tops[top] else label)
    lines.append("")
    for level in sorted(set(depth.values()), reverse=True):
        lines.append(f"-- layer {level}" + (" (imports nothing of ours)" if level == 0 else ""))
        for node in sorted(n for n in edges if depth[n] == level):
            lines.append(f"{node:22} -> {', '.join(sorted(edges[node]))}" if edges[node] else node)
    lines.append("```")
    return "\n".join(lines)


def documented(doc: Path | None = None) -> str | None:
    text = (doc or DOC).read_text()
    if START not in text or END not in text:
        return None
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write(doc: Path | None = None) -> None:
    doc = doc or DOC
    text = doc.read_text()
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    doc.write_text(f"{head}{START}\n{render(graph())}\n{END}{tail}")


def layer_breaches(edges: dict[str, set[str]], package_layers=PACKAGE_LAYERS) -> list[str]:
    """Imports from a lower package to a higher one, and top-level names placed in no layer."""
    rank = {name: level for level, names in enumerate(package_layers) for name in names}
    tops = sorted({node.split(".")[0] for node in edges if node != "."})
    found = [f"{name} is in no layer of PACKAGE_LAYERS" for name in tops if name not in rank]
    for node, targets in sorted(edges.items()):
        for target in sorted(targets):
            low, high = rank.get(node.split(".")[0]), rank.get(target.split(".")[0])
            if low is not None and high is not None and low < high:
                found.append(f"{node} imports {target}: a lower package imports a higher one")
    return found


def problems() -> list[str]:
    unresolved: list[str] = []
    edges = graph(unresolved=unresolved)
    found = [f"import of nothing in the package: {line}" for line in unresolved]
    found += layer_breaches(edges)
    found += [f"import cycle: {' <-> '.join(group)}" for group in cycles(edges)]
    found += [f"{name} has {count} lines (at most {MAX_LINES}): split it" for name, count in long_modules().items()]
    if documented() != render(edges):
        found.append(
            "docs/ARCHITECTURE.md's import graph differs from the code: python scripts/import_graph.py --write"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the graph in docs/ARCHITECTURE.md")
    parser.add_argument("--check", action="store_true", help="exit 1 on a cycle, a long module or a stale document")
    args = parser.parse_args(argv)
    if args.write:
        write()
    if not args.check:
        print(render(graph()))
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
