"""``webcall.__all__`` is what a host touches, no more and no less.

The host's entry points are the functions in ``__all__`` (``setup``, ``create_app``, ``handle_of``, ``sign_ticket``)
and the classes it builds itself to relay its own events to a browser (``EventStream``, ``Mailbox``).
From them the types a host is handed are followed, as their annotations are written: every parameter and return type,
and for each of the package's classes reached, its dataclass fields and its public methods, properties and constructor
(``setup`` returns a ``WebCall``, whose ``create_web_call`` returns a ``WebCallSession``, whose ``media`` is a
``MediaDescriptor``). Every class of the package met that way, and every type alias of the package named that way
(``VariablesHook``), must be importable from ``webcall`` and listed in ``__all__``; every name in ``__all__`` must be
an entry point, a type met that way, or an error a host catches.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any

import webcall
from webcall.errors import WebCallError
from webcall.handle import WebCall

BUILT_BY_THE_PLUGIN: frozenset[type] = frozenset({WebCall})
"""Classes whose constructor is not the host's to call: ``setup()`` builds the handle from the plugin's runtime."""


def is_ours(thing: object) -> bool:
    module = getattr(thing, "__module__", None) or ""
    return module == "webcall" or module.startswith("webcall.")


def is_alias(thing: object) -> bool:
    """A name bound to a subscripted type (``VariablesHook = Callable[...]``), not a class or a bare ``Callable``."""
    return not isinstance(thing, type) and bool(typing.get_args(thing))


class _Names(ast.NodeVisitor):
    """The names an annotation's source text uses, dotted ones whole (``web.Request``)."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_Name(self, node: ast.Name) -> None:
        self.found.append(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name):
            self.found.append(".".join([inner.id, *reversed(parts)]))
        else:
            self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):  # a quoted forward reference
            self.visit(ast.parse(node.value, mode="eval"))


def resolve(name: str, namespace: dict[str, Any], path: str) -> object:
    first, *rest = name.split(".")
    if first in namespace:
        thing = namespace[first]
    elif hasattr(builtins, first):
        thing = getattr(builtins, first)
    else:
        raise AssertionError(f"{path}: the annotation names {first!r}, which its module does not define at run time")
    for attribute in rest:
        thing = getattr(thing, attribute)
    return thing


class Surface:
    """What a host meets, walked from the entry points through annotations as written (so that a type alias is seen
    by its name): our classes and our aliases, each with the first path that reached it."""

    def __init__(self) -> None:
        self.classes: dict[type, str] = {}
        self.aliases: dict[str, tuple[object, str]] = {}

    def walk_function(self, function: Callable[..., Any], path: str) -> None:
        function = inspect.unwrap(getattr(function, "__func__", function))
        for name, annotation in inspect.get_annotations(function).items():
            self.walk_annotation(
                annotation, function.__globals__, f"{path} ->" if name == "return" else f"{path}({name})"
            )

    def walk_annotation(self, annotation: object, namespace: dict[str, Any], path: str) -> None:
        if not isinstance(annotation, str):  # evaluated already: no alias names left to see
            self.walk_object(annotation, path)
            return
        names = _Names()
        names.visit(ast.parse(annotation, mode="eval"))
        for name in names.found:
            thing = resolve(name, namespace, path)
            if is_alias(thing):
                if name not in self.aliases:
                    self.aliases[name] = (thing, path)
                    self.walk_object(thing, path)
            else:
                self.walk_object(thing, path)

    def walk_object(self, thing: object, path: str) -> None:
        if isinstance(thing, list):  # the parameters of a Callable
            for item in thing:
                self.walk_object(item, path)
        elif typing.get_args(thing):
            for argument in typing.get_args(thing):
                self.walk_object(argument, path)
        elif isinstance(thing, type) and is_ours(thing):
            self.walk_class(thing, path)

    def walk_class(self, cls: type, path: str) -> None:
        if cls in self.classes:
            return
        self.classes[cls] = path
        if dataclasses.is_dataclass(cls):
            written = field_annotations(cls)
            for field in dataclasses.fields(cls):
                if not field.name.startswith("_"):
                    annotation, namespace = written[field.name]
                    self.walk_annotation(annotation, namespace, f"{cls.__name__}.{field.name}")
        for name, member in members(cls).items():
            constructor = name == "__init__" and cls not in BUILT_BY_THE_PLUGIN and not dataclasses.is_dataclass(cls)
            if name.startswith("_") and not constructor:
                continue
            if isinstance(member, property) and member.fget is not None:
                self.walk_function(member.fget, f"{cls.__name__}.{name}")
            elif isinstance(member, staticmethod | classmethod):
                self.walk_function(member.__func__, f"{cls.__name__}.{name}")
            elif inspect.isfunction(member) and is_ours(member):
                self.walk_function(member, f"{cls.__name__}.{name}")


def members(cls: type) -> dict[str, object]:
    """The class's attributes as a host reaches them, inherited ones included (the nearest definition wins)."""
    found: dict[str, object] = {}
    for base in reversed(cls.__mro__):
        found.update(vars(base))
    return found


def field_annotations(cls: type) -> dict[str, tuple[object, dict[str, Any]]]:
    """Each field's annotation as written, with the namespace of the module that wrote it."""
    written: dict[str, tuple[object, dict[str, Any]]] = {}
    for base in reversed(cls.__mro__):
        namespace = vars(sys.modules[base.__module__])
        for name, annotation in inspect.get_annotations(base).items():
            written[name] = (annotation, namespace)
    return written


BUILT_BY_THE_HOST: frozenset[type] = frozenset({webcall.EventStream, webcall.Mailbox})
"""Classes a host builds itself to relay its own events to a browser (as the demo's console does):
``EventStream(request).relay(mailbox, as_event=...)`` with ``ServerSentEvent`` made by ``as_event``."""


def entry_points() -> dict[str, Callable[..., Any]]:
    return {name: getattr(webcall, name) for name in webcall.__all__ if inspect.isfunction(getattr(webcall, name))}


def host_surface() -> Surface:
    surface = Surface()
    for name, function in entry_points().items():
        surface.walk_function(function, name)
    for cls in BUILT_BY_THE_HOST:
        surface.walk_class(cls, cls.__name__)
    return surface


def exported(name: str, value: object) -> bool:
    return name in webcall.__all__ and getattr(webcall, name, None) is value


def test_every_class_a_host_is_handed_is_exported() -> None:
    missing = [
        f"{cls.__module__}.{cls.__name__} (via {path})"
        for cls, path in host_surface().classes.items()
        if not exported(cls.__name__, cls)
    ]
    assert not missing, "reached from the public functions but not in webcall.__all__: " + "; ".join(missing)


def test_every_type_alias_a_host_meets_is_exported() -> None:
    missing = [
        f"{name} (via {path})" for name, (alias, path) in host_surface().aliases.items() if not exported(name, alias)
    ]
    assert not missing, "named in what the public functions take or return but not in webcall.__all__: " + "; ".join(
        missing
    )


def test_every_exported_name_is_an_entry_point_a_type_a_host_meets_or_an_error() -> None:
    surface = host_surface()
    met = {id(cls) for cls in surface.classes} | {id(alias) for alias, _ in surface.aliases.values()}
    unreached = [
        name
        for name in webcall.__all__
        if name not in entry_points()
        and id(getattr(webcall, name)) not in met
        and not (isinstance(getattr(webcall, name), type) and issubclass(getattr(webcall, name), WebCallError))
    ]
    assert not unreached, "in webcall.__all__ though no public function takes or returns it: " + ", ".join(unreached)


def test_the_walk_reaches_the_handle_and_what_it_returns() -> None:
    """The walk itself: it follows return types, properties and dataclass fields, so the tests above see them."""
    classes = {cls.__name__ for cls in host_surface().classes}
    assert {"WebCall", "WebCallConfig", "WebCallSession", "MediaDescriptor", "CallbackList", "CallEvent"} <= classes
    assert "Runtime" not in classes  # the handle's constructor is the plugin's, not the host's
