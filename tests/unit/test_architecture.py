"""The house rules of issue 15, computed from the source of the five code folders.

- no import cycle between files, counting imports inside functions;
- the layers: what each folder may import (LAYERS);
- sizes: modules, functions, classes (aggregates excepted);
- no access to another module's private names, and no dynamic imports that
  hide an edge from this graph.

Each failure lists every violation as `file:line  what  (limit)`, so the message
is the to-do list. `python tests/unit/test_architecture.py` prints the whole
report and the counts without running pytest.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "snapledger"
FOLDERS = ("domain", "projections", "adapters", "api", "scheduler")

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_CLASS_METHODS = 25

# What each folder may import, runtime and type-only imports alike: the layering is
# about what a room knows of, not only about load order. The domain knows nothing
# of storage, HTTP or processes; the read models know the domain's events; the
# scheduler is a process over the service layer; the adapters implement the ports
# and the composition root (adapters/bootstrap.py) builds every process,
# the scheduler's included; api/ (HTTP app, CLI) is the outermost room.
LAYERS: dict[str, frozenset[str]] = {
    "domain": frozenset(),
    "projections": frozenset({"domain"}),
    "scheduler": frozenset({"domain", "projections"}),
    "adapters": frozenset({"domain", "projections", "scheduler"}),
    "api": frozenset({"domain", "projections", "scheduler", "adapters"}),
}

# Base classes whose subclasses are event-sourced aggregates (eventsourcing 9):
# an aggregate's methods are its commands and events, and may be many.
AGGREGATE_BASES = frozenset({"Aggregate", "BaseAggregate"})

# Names with a leading underscore that their library documents as public API.
PUBLIC_UNDERSCORE = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults",  # namedtuple
                               "_exit"})                                                         # os._exit


@dataclass(frozen=True)
class Import:
    source: str          # importing module, dotted (snapledger.api.app)
    target: str          # imported module, dotted; external ones as written
    line: int
    in_function: bool
    # Imports under `if TYPE_CHECKING:` never run: they cannot make one module's
    # loading wait on another's, so they are not edges of the cycle graph (a type
    # named for a signature is what they exist for). They do count for LAYERS.
    type_only: bool

    @property
    def internal(self) -> bool:
        return self.target == PACKAGE or self.target.startswith(PACKAGE + ".")


@dataclass
class Module:
    name: str
    path: Path           # relative to the tree's root, as messages show it
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)

    @property
    def layer(self) -> str:
        return self.name.split(".")[1]

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def load_modules(root: Path = ROOT, folders: tuple[str, ...] = FOLDERS) -> dict[str, Module]:
    modules = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text()
            name = module_name(root, path)
            modules[name] = Module(name, path.relative_to(root), ast.parse(text, str(path)), len(text.splitlines()))
    for module in modules.values():
        module.imports = ImportCollector(module, modules).collect()
    return modules


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class ImportCollector(ast.NodeVisitor):
    """Every import statement of a module wherever it stands, resolved to modules."""

    def __init__(self, module: Module, known: dict[str, Module]) -> None:
        self.module, self.known = module, known
        self.imports: list[Import] = []
        self.function_depth = 0
        self.type_only_depth = 0

    def collect(self) -> list[Import]:
        self.visit(self.module.tree)
        return self.imports

    def _function(self, node: ast.AST) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.visit(node.test)
        self.type_only_depth += 1
        for child in node.body:
            self.visit(child)
        self.type_only_depth -= 1
        for child in node.orelse:
            self.visit(child)

    def _add(self, target: str, line: int) -> None:
        self.imports.append(Import(self.module.name, target, line, self.function_depth > 0,
                                   self.type_only_depth > 0))

    def _known_prefix(self, dotted: str) -> str:
        """The longest prefix of `dotted` that is one of our modules (importing a.b.c runs a.b.c)."""
        parts = dotted.split(".")
        while parts and ".".join(parts) not in self.known:
            parts.pop()
        return ".".join(parts) or dotted

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._known_prefix(alias.name) if alias.name.startswith(PACKAGE) else alias.name,
                      node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.name.split(".")
            if not self.module.is_package:
                package.pop()
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not base.startswith(PACKAGE):
            self._add(base, node.lineno)
            return
        # `from pkg import name`: the submodule pkg.name if there is one, else pkg itself.
        targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in self.known else self._known_prefix(base)
                   for a in node.names}
        for target in sorted(targets):
            self._add(target, node.lineno)


# --- the checks: each returns its violations as lines -------------------------------------------


def runtime_graph(modules: dict[str, Module]) -> dict[str, dict[str, list[Import]]]:
    graph: dict[str, dict[str, list[Import]]] = {name: {} for name in modules}
    for module in modules.values():
        for imp in module.imports:
            if imp.internal and not imp.type_only and imp.target in modules and imp.target != module.name:
                graph[module.name].setdefault(imp.target, []).append(imp)
    return graph


def strongly_connected(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """Tarjan's components of more than one module: each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def shortest_path(graph: dict[str, dict[str, list[Import]]], start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for succ in sorted(graph[node]):
            if succ in within and succ not in previous:
                previous[succ] = node
                queue.append(succ)
    path: list[str] = []
    step: str | None = goal
    while step is not None:
        path.append(step)
        step = previous[step]
    return path[::-1]


def short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".")


def cycles(modules: dict[str, Module]) -> list[str]:
    """Every import cycle, as its component's edges and a cycle through each of them."""
    graph = runtime_graph(modules)
    found = []
    for component in strongly_connected(graph):
        members = set(component)
        shown: set[tuple[str, ...]] = set()
        lines = [f"cycle among {len(component)} modules: {', '.join(short(m) for m in component)}"]
        for source in component:
            for target, imports in sorted(graph[source].items()):
                if target not in members:
                    continue
                for imp in imports:
                    where = "inside a function" if imp.in_function else "at module level"
                    lines.append(f"  {modules[source].where(imp.line)}  {short(source)} imports {short(target)}"
                                 f" ({where})")
                loop = [source, *shortest_path(graph, target, source, members)]
                turn = loop.index(min(loop[:-1]))
                key = tuple(loop[turn:-1] + loop[:turn])
                if key not in shown:
                    shown.add(key)
                    lines.append("    cycle: " + " -> ".join(short(m) for m in [*key, key[0]]))
        found.append("\n".join(lines))
    return found


def layer_violations(modules: dict[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        allowed = LAYERS[module.layer]
        for imp in module.imports:
            if not imp.internal or imp.target == PACKAGE:
                continue
            layer = imp.target.split(".")[1]
            if layer != module.layer and layer not in allowed:
                kind = " (type-only)" if imp.type_only else ""
                found.append(f"{module.where(imp.line)}  {module.layer}/ imports {short(imp.target)}{kind}"
                             f"  (a {module.layer}/ module may import: {', '.join(sorted(allowed)) or 'none'})")
    return found


def module_sizes(modules: dict[str, Module]) -> list[str]:
    return [f"{m.where(1)}  module has {m.lines} lines  (limit {MAX_MODULE_LINES})"
            for m in modules.values() if m.lines > MAX_MODULE_LINES]


def definitions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and class, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from definitions(node, name + ".")
        else:
            yield from definitions(node, prefix)


def function_sizes(modules: dict[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        for name, node in definitions(module.tree):
            if isinstance(node, ast.ClassDef):
                continue
            lines = node.end_lineno - node.lineno + 1  # from `def` to its last line, docstring included
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{module.where(node.lineno)}  function {name} has {lines} lines"
                             f"  (limit {MAX_FUNCTION_LINES})")
    return found


def base_name(base: ast.expr) -> str:
    while isinstance(base, ast.Subscript):
        base = base.value
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else ""


def aggregate_classes(modules: dict[str, Module]) -> set[str]:
    """Names of our classes that derive, directly or through ours, from eventsourcing's aggregates."""
    bases = {node.name: {base_name(b) for b in node.bases}
             for module in modules.values() for node in ast.walk(module.tree) if isinstance(node, ast.ClassDef)}
    aggregates = set(AGGREGATE_BASES)
    grew = True
    while grew:
        grew = False
        for name, names in bases.items():
            if name not in aggregates and names & aggregates:
                aggregates.add(name)
                grew = True
    return aggregates - AGGREGATE_BASES


def class_sizes(modules: dict[str, Module]) -> list[str]:
    aggregates = aggregate_classes(modules)
    found = []
    for module in modules.values():
        for name, node in definitions(module.tree):
            if not isinstance(node, ast.ClassDef) or node.name in aggregates:
                continue
            methods = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)
            if methods > MAX_CLASS_METHODS:
                found.append(f"{module.where(node.lineno)}  class {name} has {methods} methods"
                             f"  (limit {MAX_CLASS_METHODS}; aggregates excepted)")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) \
        and name not in PUBLIC_UNDERSCORE


def own_private_names(tree: ast.Module) -> set[str]:
    """Private names this module defines: functions, classes, assigned names and `self._y = …` targets."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and is_self(node.value):
            names.add(node.attr)  # not `lib_obj._y = …`: that is patching someone else's object
    return {n for n in names if is_private(n)}


def is_self(node: ast.expr) -> bool:
    if isinstance(node, ast.Name):
        return node.id in ("self", "cls")
    # super()._x: the object's own (inherited) member, as an override calls its parent's.
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def private_reach(node: ast.AST) -> str | None:
    """The private name a node reads or writes on an object other than self, if it does."""
    if isinstance(node, ast.Attribute) and is_private(node.attr) and not is_self(node.value):
        return node.attr
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2 \
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) \
            and is_private(node.args[1].value) and not is_self(node.args[0]):
        return node.args[1].value
    return None


def private_access(modules: dict[str, Module]) -> list[str]:
    """A name with one leading underscore belongs to the module that defines it (PEP 8's "internal use").

    Another module reaches into it by
    - `from m import _x` (any m, ours or a library's);
    - `obj._x` (read, write or delete) where obj is not `self`, `cls` or `super()`,
      and this module defines no `_x` of its own (function, class, assigned name
      or `self._x = …`): this covers `module._x` and patching a library object;
    - `getattr/setattr/hasattr/delattr(obj, "_x")` on the same terms.
    Dunders are public; so are the few library names in PUBLIC_UNDERSCORE.
    """
    owners: dict[str, list[str]] = {}
    own = {name: own_private_names(m.tree) for name, m in modules.items()}
    for name, names in own.items():
        for private in names:
            owners.setdefault(private, []).append(str(modules[name].path))

    def owner(private: str) -> str:
        return f"private to {', '.join(sorted(owners[private]))}" if private in owners else "a library's private name"

    found = []
    for name, module in modules.items():
        hits = []
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom):
                source = "." * node.level + (node.module or "")
                hits += [(node.lineno, f"from {source} import {a.name}  (private to {source})")
                         for a in node.names if is_private(a.name)]
            elif (private := private_reach(node)) and private not in own[name]:
                hits.append((node.lineno, f"{ast.unparse(node)}  ({owner(private)})"))
        found += [f"{module.where(line)}  {what}" for line, what in sorted(hits)]
    return found


def dynamic_imports(modules: dict[str, Module]) -> list[str]:
    """`__import__` and `importlib.import_module` make edges (and registrations) this graph cannot see."""
    found = []
    for module in modules.values():
        calls = sorted((node.lineno, ast.unparse(node)) for node in ast.walk(module.tree)
                       if isinstance(node, ast.Call) and (
                           (isinstance(node.func, ast.Name) and node.func.id in ("__import__", "import_module"))
                           or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")))
        found += [f"{module.where(line)}  {call}  (import the module by name so the graph sees it)"
                  for line, call in calls]
    return found


CHECKS = {
    "import cycles": cycles,
    "layer violations": layer_violations,
    f"modules over {MAX_MODULE_LINES} lines": module_sizes,
    f"functions over {MAX_FUNCTION_LINES} lines": function_sizes,
    f"classes over {MAX_CLASS_METHODS} methods": class_sizes,
    "private accesses": private_access,
    "dynamic imports": dynamic_imports,
}


def analyse(modules: dict[str, Module]) -> dict[str, list[str]]:
    return {title: check(modules) for title, check in CHECKS.items()}


def summary(modules: dict[str, Module], findings: dict[str, list[str]]) -> str:
    imports = [i for m in modules.values() for i in m.imports if i.internal]
    counts = ", ".join(f"{len(violations)} {title}" for title, violations in findings.items())
    return (f"{len(modules)} modules, {len(imports)} internal imports"
            f" ({sum(i.in_function for i in imports)} inside functions,"
            f" {sum(i.type_only for i in imports)} type-only); {counts}")


def report(title: str, violations: list[str]) -> str:
    return f"{len(violations)} {title}:\n" + "\n".join(violations)


# --- the tests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_modules()


@pytest.fixture(scope="module")
def findings(modules: dict[str, Module]) -> dict[str, list[str]]:
    return analyse(modules)


def test_the_analysis_sees_the_code(modules: dict[str, Module], findings: dict[str, list[str]]) -> None:
    # The guards below are only as good as the graph: an empty or unresolved one passes them all.
    assert {m.layer for m in modules.values()} == set(FOLDERS)
    assert len(modules) > 50 and all(m.lines for m in modules.values() if not m.is_package)
    edges = sum(len(targets) for targets in runtime_graph(modules).values())
    assert edges > 100, f"only {edges} edges between our modules: imports are not being resolved"
    print(summary(modules, findings))


def test_the_analysis_resolves_what_python_runs(tmp_path: Path) -> None:
    (tmp_path / "domain").mkdir()
    (tmp_path / "api").mkdir()
    (tmp_path / "domain" / "__init__.py").write_text("")
    (tmp_path / "domain" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from snapledger.api.c import C\n"
        "def f(other):\n    from ..api import c\n    return other._hidden, c._x\n"
        "class K:\n    def g(self):\n        self._mine = 1\n        return getattr(self.peer, '_mine')\n")
    (tmp_path / "domain" / "b.py").write_text("def f():\n    import snapledger.domain.a\n")
    (tmp_path / "api" / "__init__.py").write_text("")
    (tmp_path / "api" / "c.py").write_text("from snapledger.domain.a import K, _y\n__import__('json')\n")
    mods = load_modules(tmp_path, ("domain", "api"))
    imports = {(short(i.target), i.in_function, i.type_only) for i in mods["snapledger.domain.a"].imports}
    assert imports == {("typing", False, False), ("domain.b", False, False), ("api.c", False, True),
                       ("api.c", True, False)}
    assert [c.splitlines()[0] for c in cycles(mods)] == ["cycle among 3 modules: api.c, domain.a, domain.b"]
    assert len(layer_violations(mods)) == 2  # a's type-only and function-level imports of api/
    assert {v.split("  ")[1] for v in private_access(mods)} == {
        "other._hidden", "c._x", "from snapledger.domain.a import _y"}
    assert len(dynamic_imports(mods)) == 1


@pytest.mark.parametrize("title", list(CHECKS), ids=["cycles", "layers", "module_lines", "function_lines",
                                                    "class_methods", "private_names", "dynamic_imports"])
def test_house_rule(title: str, modules: dict[str, Module], findings: dict[str, list[str]]) -> None:
    if findings[title]:
        pytest.fail(report(title, findings[title]) + f"\n\nsummary: {summary(modules, findings)}", pytrace=False)


if __name__ == "__main__":
    found = load_modules()
    results = analyse(found)
    for name, violations in results.items():
        if violations:
            print(report(name, violations), end="\n\n")
    print("summary:", summary(found, results))
