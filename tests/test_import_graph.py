"""The package's modules, and the adapters', import each other without cycles.

Read from the source with :mod:`ast`, not by importing: the graph of which module of
``fileproc_wsgi`` and of the three adapters imports which. Imports at a module's top level
run when it is imported, so a cycle among them breaks (or half-initialises) whichever
module is imported first. Imports deferred into a function (to keep a native library or
boto3 off the web process until used) cannot break an import, but a cycle through them
still means two modules that each know the other. Neither kind is allowed: move the shared
part into a module both import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fileproc_wsgi

ROOT = Path(fileproc_wsgi.__file__).parent.parent
PACKAGES = [
    ROOT / "fileproc_wsgi",
    *(ROOT / "integrations" / name for name in ("fileproc_django", "fileproc_jinja2", "fileproc_flask")),
]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(package.parent).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)


def _imports(tree: ast.Module, *, deferred: bool):
    """The import statements that run: at the top level (inside ``try``/``if`` too), and
    with ``deferred`` those in functions as well; never a ``TYPE_CHECKING`` block's."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if deferred:
                pending.extend(node.body)
        else:
            pending.extend(ast.iter_child_nodes(node))


def import_graph(*, deferred: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), deferred=deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # `from . import x` imports the module x; `from .m import f` imports m.
                named = [f"{base}.{alias.name}" for alias in node.names]
                targets = [module if module in modules else base for module in named]
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_package_and_the_adapters():
    graph = import_graph(deferred=False)
    assert "fileproc_wsgi.engines.raster" in graph
    assert "fileproc_wsgi.processing" in graph["fileproc_wsgi.middleware"]
    assert "fileproc_wsgi.errors" in graph["fileproc_wsgi.engines"]
    assert "fileproc_wsgi.store.schema" in graph["fileproc_wsgi.store.migrations"]
    assert "fileproc_jinja2" in graph["fileproc_flask.extension"]
    assert "fileproc_wsgi.block" in graph["fileproc_django.templatetags.fileprocessor"]


def test_no_module_imports_itself_back_at_import_time():
    assert cycles(import_graph(deferred=False)) == []


def test_no_module_imports_itself_back_even_from_a_function():
    assert cycles(import_graph(deferred=True)) == [], "move the shared part into a module both import"
