"""The package's shape: no import circles between modules, the core does not know the emulator exists, and the
emulator does not know the plugin.

Imports are read from the source (ast), not by importing. For circles and the core, an import counts when it runs at
import time: imports under ``if TYPE_CHECKING:`` and imports inside functions are left out, since neither can form a
circle at start-up. For the emulator every import counts, wherever it is.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "webcall"
EMULATOR = "webcall.emulator"
ADAPTER = "webcall.embedded"
"""The plugin's side of the seam: runs the emulator as the plugin's upstream; only ``open_upstream`` imports it."""
VENDOR_FACTS = frozenset({"webcall.dialnexa.facts"})
"""What the emulator may import from outside its package: what DialNexa documents, which imports nothing of ours."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def is_type_checking_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def import_time_imports(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (module level, including try/if blocks)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif is_type_checking_block(node):
            continue
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in (node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])):
                yield from import_time_imports(block)
            for handler in getattr(node, "handlers", []):
                yield from import_time_imports(handler.body)


def all_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it runs (module level, ``if TYPE_CHECKING:``, inside functions)."""
    return (node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))


def imported_modules(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's own modules an import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    if node.level:
        is_package = MODULES[name].name == "__init__.py"
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:
        submodule = f"{target}.{alias.name}"
        found.add(submodule if submodule in MODULES else target)
    return {module for module in found if module in MODULES}


def is_emulator(name: str) -> bool:
    return name == EMULATOR or name.startswith(EMULATOR + ".")


def plugin_imports(name: str, tree: ast.Module) -> list[str]:
    """The package's modules, other than the emulator's own and the vendor facts, that module ``name`` imports."""
    found: set[str] = set()
    for node in all_imports(tree):
        found |= imported_modules(name, node)
    return sorted(module for module in found if not is_emulator(module) and module not in VENDOR_FACTS)


def parse(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(encoding="utf-8"), filename=str(MODULES[name]))


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in import_time_imports(tree.body):
            targets |= imported_modules(name, node)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first: those are not circles of the module's own making.
        graph[name] = {t for t in targets if t != name and not name.startswith(t + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in on_stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "webcall.views" in graph and "webcall.runtime" in graph["webcall.views"]
    assert "webcall.emulator.server" in graph


def test_no_import_circles() -> None:
    assert circles(import_graph()) == []


def test_a_circle_is_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_does_not_import_the_emulator() -> None:
    """Only the adapter imports the emulator, and no module imports the adapter when it is imported."""
    graph = import_graph()
    core = {name: targets for name, targets in graph.items() if not is_emulator(name) and name != ADAPTER}
    leaks = {name: sorted(t for t in targets if is_emulator(t) or t == ADAPTER) for name, targets in core.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert any(is_emulator(target) for target in graph[ADAPTER])


def test_only_the_upstream_seam_names_the_emulator() -> None:
    """The one lazy import of the embedded emulator (the adapter) lives in ``open_upstream``; no other core module
    mentions it, besides the adapter itself."""
    naming = sorted(
        name
        for name, path in MODULES.items()
        if not name.startswith("webcall.emulator")
        and name != "webcall.__main__"
        and "emulator"
        in "".join(
            ast.unparse(node)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Import | ast.ImportFrom)
        )
    )
    assert naming == [ADAPTER, "webcall.upstream"]


def test_the_emulator_imports_nothing_of_the_plugin() -> None:
    """Like a stand-in for DialNexa, the emulator stands alone: from the rest of the package it imports only DialNexa's
    documented facts, at import time or any other (``TYPE_CHECKING``, inside a function)."""
    emulator = [name for name in MODULES if is_emulator(name)]
    assert "webcall.emulator.webhooks" in emulator and "webcall.emulator.media.session" in emulator
    leaks = {name: plugin_imports(name, parse(name)) for name in emulator}
    assert {name: found for name, found in leaks.items() if found} == {}


def test_the_vendor_facts_import_nothing_of_the_plugin() -> None:
    """What the emulator may import from the plugin's package imports nothing from it (the standard library only)."""
    for name in sorted(VENDOR_FACTS):
        found = [module for node in all_imports(parse(name)) for module in imported_modules(name, node)]
        assert found == [], name


def test_a_plugin_import_in_the_emulator_is_found() -> None:
    source = """
from __future__ import annotations
from ..config import Agent
from . import state
from .state import Call
from webcall.dialnexa.facts import signature
if TYPE_CHECKING:
    import webcall.upstream
def deliver() -> None:
    from webcall import views
    from webcall.dialnexa import DialNexaClient
"""
    found = plugin_imports("webcall.emulator.webhooks", ast.parse(source))
    assert found == ["webcall.config", "webcall.dialnexa", "webcall.upstream", "webcall.views"]


DEMO = PACKAGE.parent / "demo"


def test_the_demo_uses_only_the_public_api() -> None:
    """The demo is a host like any other: it imports ``webcall`` and the names in ``webcall.__all__``, nothing from
    the package's modules."""
    import webcall

    reaching_in: dict[str, list[str]] = {}
    for path in sorted(DEMO.rglob("*.py")):
        for node in all_imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("webcall.")]
            elif node.module == "webcall":
                names = [f"webcall.{alias.name}" for alias in node.names if alias.name not in webcall.__all__]
            else:
                names = [node.module] if node.module and node.module.startswith("webcall.") else []
            if names:
                reaching_in.setdefault(path.name, []).extend(names)
    assert reaching_in == {}


def test_every_refusal_the_domain_raises_has_its_http_status() -> None:
    """The call desk and the ticket verifier raise refusals by code; the views answer each code with the status in
    one table, so a new code without one would answer 400 by accident."""
    from webcall.views import REFUSAL_STATUS

    refusals = {"CallRefused", "TicketRefused"}
    raised: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in refusals:
                code = node.args[0]
                assert isinstance(code, ast.Constant) and isinstance(code.value, str), ast.unparse(node)
                raised.add(code.value)
    assert raised and raised <= REFUSAL_STATUS.keys(), raised - REFUSAL_STATUS.keys()
