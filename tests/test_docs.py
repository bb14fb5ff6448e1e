"""The reference pages under ``docs/`` say what the code does, and every link in them and in the README leads somewhere.

What the code does is read from its source, not written down a second time here: the configuration from
``WebCallConfig``'s fields and ``from_env``; the error codes from every ``HTTPProblem`` the plugin builds (the
emulator stands in for DialNexa and is not the plugin) and the error middleware's mapping of aiohttp's statuses; the
requests ``DialNexaClient`` sends; the claims and limits of ``webcall/tickets.py``; the browser events from what
``static/webcall.js`` dispatches. A row the code lost is as much a failure as a code the page lacks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import pytest

from webcall import WebCallConfig, hs256, tickets
from webcall.events import NAMES
from webcall.views import REFUSAL_STATUS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "webcall"
DOCS = ROOT / "docs"
WIDGET_SOURCE = ROOT / "static" / "webcall.js"
ENVIRONMENT_NAME = re.compile(r"^(?:WEBCALL|DIALNEXA)_[A-Z0-9_]+$")
BACKTICKED = re.compile(r"`([^`]+)`")


# -- reading the pages --------------------------------------------------------------------------------------------
def without_code_blocks(markdown: str) -> str:
    """The page with its fenced code blocks blanked out (their lines kept, so nothing else moves)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m[0].count("\n"), markdown, flags=re.S | re.M)


def table_rows(markdown: str, header: tuple[str, ...]) -> Iterator[list[str]]:
    """The cells of every row of every table whose header row is ``header``."""
    lines = without_code_blocks(markdown).splitlines()
    for number, line in enumerate(lines):
        if cells(line) != list(header):
            continue
        for row in lines[number + 2 :]:
            if not row.startswith("|"):
                break
            yield cells(row)


def cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def backticked(cell: str) -> list[str]:
    return BACKTICKED.findall(cell)


# -- configuration -----------------------------------------------------------------------------------------------
CONFIGURATION_HEADER = ("option", "environment variable", "default", "range", "meaning")


@dataclass(frozen=True)
class OptionRow:
    option: str
    variables: frozenset[str]
    default: str
    range: str


def documented_options() -> list[OptionRow]:
    page = (DOCS / "configuration.md").read_text()
    rows = []
    for option, variables, default, allowed, _ in table_rows(page, CONFIGURATION_HEADER):
        names = backticked(option)
        assert len(names) == 1, f"docs/configuration.md: one option per row, not {option!r}"
        defaults = backticked(default)
        assert len(defaults) == 1, f"docs/configuration.md: {names[0]}'s default must be one `literal`"
        rows.append(OptionRow(names[0], frozenset(backticked(variables)), defaults[0], allowed))
    return rows


def field_defaults() -> dict[str, Any]:
    defaults = {}
    for field in fields(WebCallConfig):
        if field.name.startswith("_"):
            continue
        factory = field.default_factory
        defaults[field.name] = field.default if factory is MISSING else factory()
    return defaults


def function_named(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name)


def variables_read_by_from_env() -> dict[str, set[str]]:
    """Option → the environment variables ``from_env`` reads it from: each statement of ``from_env`` that names
    variables (``text("WEBCALL_STORE", "store")``, ``if env.get("WEBCALL_METRICS"…): values["metrics"] = …``) names
    the options it sets too."""
    options = set(field_defaults())
    reader = function_named(ast.parse((PACKAGE / "config.py").read_text()), "from_env")
    read: dict[str, set[str]] = {option: set() for option in options}
    for statement in reader.body:
        strings = {
            node.value for node in ast.walk(statement) if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        variables = {text for text in strings if ENVIRONMENT_NAME.match(text)}
        for option in strings & options if variables else ():
            read[option] |= variables
    return read


def must_be_positive() -> set[str]:
    """The options ``WebCallConfig._check`` refuses unless they are greater than 0."""
    check = function_named(ast.parse((PACKAGE / "config.py").read_text()), "_check")
    positive = next(
        node.value
        for node in ast.walk(check)
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "positive"
    )
    assert isinstance(positive, ast.Dict)
    return {key.value for key in positive.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)}


def plugin_sources() -> Iterator[Path]:
    """The plugin's modules: the package without the emulator, which stands in for DialNexa."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if "emulator" not in path.relative_to(PACKAGE).parts:
            yield path


def test_every_option_is_documented_once_and_every_row_is_an_option() -> None:
    documented = [row.option for row in documented_options()]
    options = set(field_defaults())
    assert not options - set(documented), f"options missing from docs/configuration.md: {options - set(documented)}"
    assert not set(documented) - options, f"rows for options that do not exist: {set(documented) - options}"
    assert len(documented) == len(set(documented)), "an option has two rows in docs/configuration.md"


def test_every_row_names_the_variables_from_env_reads() -> None:
    read = variables_read_by_from_env()
    for row in documented_options():
        assert row.variables == read[row.option], (
            f"{row.option}: docs/configuration.md names {sorted(row.variables) or 'no variable'}, "
            f"from_env reads {sorted(read[row.option]) or 'none'}"
        )


def test_every_row_gives_the_default_the_code_has() -> None:
    defaults = field_defaults()
    for row in documented_options():
        try:
            documented: object = ast.literal_eval(row.default)
        except (ValueError, SyntaxError):
            pytest.fail(f"{row.option}: the default `{row.default}` is not a Python literal")
        actual = defaults[row.option]
        assert documented == actual and type(documented) in (type(actual), int), (
            f"{row.option}: docs/configuration.md says `{row.default}`, WebCallConfig has {actual!r}"
        )


def test_options_that_must_be_positive_say_so() -> None:
    rows = {row.option: row for row in documented_options()}
    for option in must_be_positive():
        assert rows[option].range == "> 0", f"{option}: WebCallConfig refuses 0 and below; its range says otherwise"


def test_every_variable_the_package_reads_is_documented_and_nothing_else() -> None:
    """``WEBCALL_PREFIX`` and the like are read outside ``WebCallConfig``: they are on the page all the same."""
    in_code = set()
    for path in plugin_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENVIRONMENT_NAME.match(node.value):
                in_code.add(node.value)
    page = without_code_blocks((DOCS / "configuration.md").read_text())
    on_page = {name for name in BACKTICKED.findall(page) if ENVIRONMENT_NAME.match(name)}
    assert not in_code - on_page, f"read by the package, missing from docs/configuration.md: {in_code - on_page}"
    assert not on_page - in_code, f"on docs/configuration.md, read nowhere: {on_page - in_code}"


# -- error codes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Module:
    path: Path
    tree: ast.Module
    constants: dict[str, object]
    """Module-level names bound to a string or a number."""
    mappings: dict[str, list[tuple[object, object]]]
    """Module-level names bound to a dictionary of literals (a status → code mapping)."""

    @classmethod
    def read(cls, path: Path) -> Module:
        tree = ast.parse(path.read_text())
        constants: dict[str, object] = {}
        mappings: dict[str, list[tuple[object, object]]] = {}
        for name, value in module_bindings(tree):
            if isinstance(value, ast.Constant):
                constants[name] = value.value
            elif isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) for k in value.keys):
                items = list(zip(value.keys, value.values, strict=True))
                if all(isinstance(k, ast.Constant) and isinstance(v, ast.Constant) for k, v in items):
                    mappings[name] = [(literal(k), literal(v)) for k, v in items]
        return cls(path, tree, constants, mappings)

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def module_bindings(tree: ast.Module) -> Iterator[tuple[str, ast.expr]]:
    """``NAME = value`` and ``NAME: type = value`` at the module's top level."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            yield node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value


def literal(node: ast.expr | None) -> object:
    assert isinstance(node, ast.Constant)
    return node.value


@dataclass(frozen=True)
class Function:
    module: Module
    node: ast.FunctionDef | ast.AsyncFunctionDef

    def parameter(self, name: str) -> tuple[int, ast.expr | None] | None:
        """The position of parameter ``name`` and its default, or None when the function has no such parameter."""
        arguments = self.node.args
        positional = [*arguments.posonlyargs, *arguments.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(
            arguments.defaults
        )
        for position, argument in enumerate(positional):
            if argument.arg == name:
                return position, defaults[position]
        for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True):
            if argument.arg == name:
                return -1, default
        return None


class ProblemReader:
    """Every (code, status) the plugin's ``HTTPProblem``s can carry; a status of None is decided at run time."""

    def __init__(self, paths: list[Path]) -> None:
        self.modules = [Module.read(path) for path in paths]
        self.functions: dict[str, list[Function]] = {}
        self.enclosing: dict[int, Function] = {}
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    function = Function(module, node)
                    self.functions.setdefault(node.name, []).append(function)
                    for inner in ast.walk(node):
                        self.enclosing[id(inner)] = function  # the innermost wins: walked last

    def problems(self) -> Iterator[tuple[str, int | None, str]]:
        """(code, status, where) for every ``HTTPProblem(...)`` in the plugin, and every refusal of the code that
        knows nothing of HTTP (``CallRefused(...)``, ``TicketRefused(...)``) with the status the views answer it with
        (``REFUSAL_STATUS``, else 400)."""
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and called_name(node) in REFUSALS:
                    where = module.where(node)
                    code = argument(node, 0, "code")
                    assert code is not None, f"{where}: a refusal without a code"
                    for code_value in self.values(code, module, where, depth=0):
                        assert isinstance(code_value, str), f"{where}: the code {code_value!r} is not a string"
                        yield code_value, REFUSAL_STATUS.get(code_value, 400), where
                if isinstance(node, ast.Call) and called_name(node) == "HTTPProblem":
                    where = module.where(node)
                    status = argument(node, 0, "status")
                    code = argument(node, 1, "code")
                    if is_refusal_code(code):
                        continue  # the views' answer to a refusal: its codes are read where it is raised
                    assert code is not None and status is not None, f"{where}: HTTPProblem without status or code"
                    for code_value, status_value in self.codes(code, status, module, where, depth=0):
                        yield code_value, status_value, where

    def codes(
        self, code: ast.expr, status: ast.expr, module: Module, where: str, depth: int
    ) -> Iterator[tuple[str, int | None]]:
        lookup = mapping_lookup(code, module)
        if lookup is not None:  # _HTTP_CODES.get(exc.status, "error"): each status its code, the rest the fallback
            pairs, fallback = lookup
            for status_value, code_value in pairs:
                assert isinstance(status_value, int) and isinstance(code_value, str), f"{where}: {status_value}"
                yield code_value, status_value
            yield fallback, None
            return
        for code_value in self.values(code, module, where, depth):
            assert isinstance(code_value, str), f"{where}: the code {code_value!r} is not a string"
            for status_value in self.values(status, module, where, depth, unknown_allowed=True):
                assert status_value is None or isinstance(status_value, int), f"{where}: status {status_value!r}"
                yield code_value, status_value

    def values(
        self, node: ast.expr, module: Module, where: str, depth: int, *, unknown_allowed: bool = False
    ) -> Iterator[object]:
        """What ``node`` can evaluate to: a literal, a module constant, or a parameter followed to every call site."""
        assert depth < 8, f"{where}: followed too many calls"
        if isinstance(node, ast.Constant):
            yield node.value
            return
        if isinstance(node, ast.Name) and node.id in module.constants:
            yield module.constants[node.id]
            return
        function = self.enclosing.get(id(node))
        parameter = function.parameter(node.id) if function and isinstance(node, ast.Name) else None
        if function is not None and parameter is not None and isinstance(node, ast.Name):
            yield from self.passed(function, node.id, parameter, where, depth, unknown_allowed=unknown_allowed)
            return
        assert unknown_allowed, f"{where}: cannot read the error code from {ast.unparse(node)!r}: name it literally"
        yield None  # a status known at run time only (DialNexa's, aiohttp's)

    def passed(
        self,
        function: Function,
        name: str,
        parameter: tuple[int, ast.expr | None],
        where: str,
        depth: int,
        *,
        unknown_allowed: bool,
    ) -> Iterator[object]:
        position, default = parameter
        callers = [
            (module, call)
            for module in self.modules
            for call in ast.walk(module.tree)
            if isinstance(call, ast.Call) and calls(call, module, function)
        ]
        assert callers, f"{where}: {function.node.name}() passes {name} on but is never called"
        for module, call in callers:
            given = argument(call, position, name) if position >= 0 else keyword(call, name)
            if given is None:
                assert default is not None, f"{module.where(call)}: {function.node.name}() without {name}"
                yield from self.values(default, function.module, where, depth + 1, unknown_allowed=unknown_allowed)
            else:
                yield from self.values(given, module, module.where(call), depth + 1, unknown_allowed=unknown_allowed)


def calls(call: ast.Call, module: Module, function: Function) -> bool:
    """Whether ``call``, in ``module``, calls ``function``: by its name in its own module, by the name imported from
    there, or as an attribute of that module (``tickets.invalid(...)``)."""
    name, home = function.node.name, function.module.path.stem
    if isinstance(call.func, ast.Attribute):
        owner = call.func.value
        return call.func.attr == name and isinstance(owner, ast.Name) and owner.id == home
    if called_name(call) != name:
        return False
    if module is function.module:
        return True
    return any(
        isinstance(node, ast.ImportFrom)
        and (node.module or "").rpartition(".")[2] == home
        and any(alias.name == name and alias.asname is None for alias in node.names)
        for node in ast.walk(module.tree)
    )


REFUSALS = {"Refusal", "CallRefused", "TicketRefused"}
"""The domain's refusals (``webcall.errors``), whose codes the views answer as HTTP problems."""


def is_refusal_code(code: ast.expr | None) -> bool:
    """``err.code`` of a refusal the views turn into an HTTP problem (``domain_problem``)."""
    return isinstance(code, ast.Attribute) and code.attr == "code"


def called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    if position < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
        return call.args[position]
    return keyword(call, name)


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def mapping_lookup(node: ast.expr, module: Module) -> tuple[list[tuple[object, object]], str] | None:
    """``MAPPING.get(key, "fallback")`` over a module's literal mapping: its items and the fallback."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"):
        return None
    owner = node.func.value
    if not (isinstance(owner, ast.Name) and owner.id in module.mappings and len(node.args) == 2):
        return None
    fallback = node.args[1]
    assert isinstance(fallback, ast.Constant) and isinstance(fallback.value, str), module.where(node)
    return module.mappings[owner.id], fallback.value


def codes_in_the_code() -> dict[str, set[int | None]]:
    found: dict[str, set[int | None]] = {}
    for code, status, _ in ProblemReader(list(plugin_sources())).problems():
        found.setdefault(code, set()).add(status)
    return found


def documented_codes() -> dict[str, str]:
    rows: dict[str, str] = {}
    for code, status, when in table_rows((DOCS / "errors.md").read_text(), ("code", "status", "when")):
        names = backticked(code)
        assert len(names) == 1, f"docs/errors.md: one code per row, not {code!r}"
        assert names[0] not in rows, f"docs/errors.md: {names[0]} has two rows"
        assert when, f"docs/errors.md: {names[0]} does not say when"
        rows[names[0]] = status
    return rows


def test_the_reader_finds_codes_however_they_are_written() -> None:
    """Literal codes, a module constant (``NOT_ALLOWED``), one passed through helpers (``invalid`` →
    ``_refusal``, whose status is a default) and the middleware's mapping with its fallback."""
    found = codes_in_the_code()
    assert found["rate_limited"] == {429}
    assert found["callback_not_allowed"] == {403}
    assert found["ticket_invalid"] == {400, 401}
    assert found["ticket_expired"] == {401}
    assert found["method_not_allowed"] == {405} and found["error"] == {None}
    assert found["media_update_refused"] == {None}


def test_every_code_the_plugin_answers_with_is_documented_and_nothing_else() -> None:
    found, rows = codes_in_the_code(), documented_codes()
    assert not found.keys() - rows.keys(), f"codes missing from docs/errors.md: {sorted(found.keys() - rows.keys())}"
    assert not rows.keys() - found.keys(), f"docs/errors.md rows no code answers with: {rows.keys() - found.keys()}"


def test_every_code_is_documented_with_its_statuses() -> None:
    rows = documented_codes()
    for code, statuses in codes_in_the_code().items():
        if code not in rows:
            continue  # reported by the test above
        documented = {int(number) for number in re.findall(r"\b[1-5]\d\d\b", rows[code])}
        known = {status for status in statuses if status is not None}
        if None in statuses and not known:
            assert not documented, f"{code}: its status is decided at run time; docs/errors.md says {rows[code]!r}"
            continue
        assert documented == known, f"{code}: docs/errors.md says {sorted(documented)}, the code {sorted(known)}"


# -- the DialNexa contract ----------------------------------------------------------------------------------------
def dialnexa_requests() -> set[str]:
    """``METHOD /v1/path`` for every request ``DialNexaClient`` sends through ``_request``, its path parameters as
    ``{id}`` and the configurable paths at their defaults (``/web-calls``, ``/calls/{call_id}/end``)."""
    configurable = {"self._web_call_path": "web_call_path", "self._end_call_path": "end_call_path"}
    defaults = field_defaults()

    def path_of(node: ast.expr, function: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.JoinedStr):
            return "".join(str(part.value) if isinstance(part, ast.Constant) else "{id}" for part in node.values)
        if ast.unparse(node) in configurable:
            return str(defaults[configurable[ast.unparse(node)]])
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("_end_call_path.format"):
            return str(defaults["end_call_path"])
        if isinstance(node, ast.Name):  # path = f"/calls/{...}" earlier in the same method
            bound = next(
                statement.value
                for statement in ast.walk(function)
                if isinstance(statement, ast.Assign) and ast.unparse(statement.targets[0]) == node.id
            )
            return path_of(bound, function)
        raise AssertionError(f"webcall/dialnexa/client.py: cannot read the path {ast.unparse(node)!r}")

    requests = set()
    tree = ast.parse((PACKAGE / "dialnexa" / "client.py").read_text())
    for function in ast.walk(tree):
        if not isinstance(function, ast.AsyncFunctionDef | ast.FunctionDef):
            continue
        for call in ast.walk(function):
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "self._request":
                method = literal(call.args[0])
                requests.add(f"{method} /v1{path_of(call.args[1], function)}")
    assert "POST /v1/calls" in requests, "DialNexaClient's requests were not found"
    return requests


def test_every_request_to_dialnexa_is_in_the_contract() -> None:
    page = (DOCS / "dialnexa.md").read_text()
    missing = {request for request in dialnexa_requests() if request not in page}
    assert not missing, f"docs/dialnexa.md does not name {sorted(missing)}"


# -- call tickets --------------------------------------------------------------------------------------------------
def claims_the_verifier_reads() -> set[str]:
    """The claims ``webcall/tickets.py`` requires of a ticket (``REQUIRED_CLAIMS``) and the ones it reads
    (``claims.get("vars")``)."""
    tree = ast.parse((PACKAGE / "tickets.py").read_text())
    read = set(tickets.REQUIRED_CLAIMS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "claims.get":
            read.add(str(literal(node.args[0])))
    assert {"aud", "exp"} <= read, "the ticket verifier's claims were not found in webcall/tickets.py"
    return read


def test_every_claim_the_verifier_reads_is_in_the_claims_table_and_no_other() -> None:
    page = (DOCS / "tickets.md").read_text()
    documented = [backticked(claim)[0] for claim, _ in table_rows(page, ("claim", "meaning"))]
    assert set(documented) == claims_the_verifier_reads(), (
        f"docs/tickets.md lists {sorted(documented)}, the verifier reads {sorted(claims_the_verifier_reads())}"
    )


def test_the_ticket_limits_are_the_verifiers() -> None:
    page = (DOCS / "tickets.md").read_text()
    for stated in (
        f"≤ {tickets.MAX_TICKET_VALUE_LENGTH} characters",
        f"≤ {tickets.MAX_TICKET_VARIABLES} of them",
        f"at most {tickets.MAX_TICKET_SECONDS // 60} minutes ahead",
        f"{tickets.LEEWAY_SECONDS} s of clock difference",
        f"at most {tickets.MAX_TICKET_BYTES} bytes",
        f"≥ {tickets.MIN_SECRET_BYTES} bytes",
        f"`{tickets.DEFAULT_AUDIENCE}`",
        hs256.ALGORITHM,
    ):
        assert stated in page, f"docs/tickets.md does not say {stated!r}"


# -- the widget's events -------------------------------------------------------------------------------------------
def widget_source() -> str:
    return WIDGET_SOURCE.read_text()


def dispatched_events() -> set[str]:
    """The ``webcall:*`` events the widget dispatches by name (its ``#emit("...")`` calls)."""
    names = set(re.findall(r'#emit\(\s*"([a-z][a-z.-]*)"', widget_source()))
    assert {"state", "error", "ended"} <= names, "the widget's #emit calls were not found: has the helper moved?"
    return {f"webcall:{name}" for name in names}


def relayed_events() -> set[str]:
    """The server's lifecycle events, which the widget re-emits under their own type (``#emit(event.type, …)``)."""
    assert re.search(r"#emit\(\s*event\.type\b", widget_source()), "the widget no longer re-emits lifecycle events"
    calls = (PACKAGE / "calls.py").read_text()
    own = set(re.findall(r'plugin_event\(\s*"([a-z.]+)"', calls))
    assert own, "the plugin's own events (plugin_event(...)) were not found in webcall/calls.py"
    return {f"webcall:{name}" for name in {*NAMES.values(), *own, "dialnexa.<event_type>"}}


def literals(expressions: list[str]) -> set[str]:
    return {text for expression in expressions for text in re.findall(r'"([a-z_]+)"', expression)}


def widget_error_codes() -> set[str]:
    """The codes of ``webcall:error`` the widget makes itself (the plugin's codes are in docs/errors.md): the first
    argument of each ``new CallError(...)``, the blockers' codes, what ``onFailed`` is told, and the one error it
    emits directly."""
    source = widget_source()
    blockers = re.search(r"BLOCKER_ERROR_CODES = \{(.*?)\}", source, re.S)
    assert blockers, "BLOCKER_ERROR_CODES was not found in the widget"
    codes = literals(re.findall(r"new CallError\(([^,]*),", source))
    codes |= literals(re.findall(r':\s*("[a-z_]+")', blockers[1]))
    codes |= literals(re.findall(r"onFailed\(([^)]*)\)", source))
    codes |= literals(re.findall(r'#emit\(\s*"error",\s*\{\s*code:\s*("[a-z_]+")', source))
    return codes


def end_reasons() -> set[str]:
    """The reasons of ``webcall:ended`` the widget names itself (``reason: "hangup"``, ``… || "agent_hangup"``)."""
    return literals(re.findall(r"\breason:\s*([^,}]*)", widget_source()))


def widget_states() -> set[str]:
    """The states ``webcall:state`` reports: the ones set by name and the live ones the agent's messages set."""
    source = widget_source()
    live = re.search(r"LIVE_STATES = \[(.*?)\]", source)
    assert live, "LIVE_STATES was not found in the widget"
    return literals(re.findall(r'#setState\(\s*("[a-z]+")', source)) | literals([live[1]])


def events_page() -> str:
    return without_code_blocks((DOCS / "events.md").read_text())


def test_every_event_the_widget_dispatches_is_documented() -> None:
    listed = set(BACKTICKED.findall(events_page()))
    missing = (dispatched_events() | relayed_events()) - listed
    assert not missing, f"events missing from docs/events.md: {sorted(missing)}"


def test_every_event_documented_is_dispatched() -> None:
    listed = {name for name in BACKTICKED.findall(events_page()) if re.match(r"webcall:[a-z]", name)}  # not webcall:*
    stale = listed - dispatched_events() - relayed_events()
    assert not stale, f"docs/events.md lists events the widget never dispatches: {sorted(stale)}"


def test_every_error_code_and_end_reason_of_the_widget_is_documented() -> None:
    listed = set(BACKTICKED.findall(events_page()))
    assert {"network_blocked", "connect_failed", "microphone_unavailable"} <= widget_error_codes()
    assert not widget_error_codes() - listed, f"missing from docs/events.md: {widget_error_codes() - listed}"
    assert not end_reasons() - listed, f"end reasons missing from docs/events.md: {end_reasons() - listed}"


def test_every_state_of_the_widget_is_documented() -> None:
    listed = set(BACKTICKED.findall(events_page()))
    assert {"idle", "microphone", "speaking", "error"} <= widget_states()
    assert not widget_states() - listed, f"states missing from docs/events.md: {widget_states() - listed}"


# -- links ---------------------------------------------------------------------------------------------------------
def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """The fragment GitHub gives each heading: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", without_code_blocks(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", "")).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links() -> Iterator[tuple[Path, str]]:
    for page in pages():
        text = without_code_blocks(page.read_text())
        text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:: not relative
                yield page, target


@pytest.mark.parametrize(
    ("page", "target"),
    [pytest.param(page, target, id=f"{page.relative_to(ROOT)}->{target}") for page, target in relative_links()],
)
def test_every_relative_link_resolves(page: Path, target: str) -> None:
    path, _, fragment = target.partition("#")
    destination = (page.parent / path).resolve() if path else page
    assert destination.is_file(), f"{page.relative_to(ROOT)} links {target}, which does not exist"
    if fragment and destination.suffix == ".md":
        assert fragment in anchors(destination), f"{page.relative_to(ROOT)} links {target}: no such heading there"


def test_the_readme_links_every_reference_page() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("configuration", "errors", "events", "dialnexa", "tickets", "testing"):
        assert f"(docs/{name}.md)" in readme, f"the README does not link docs/{name}.md"
