"""Field types of the configuration dataclasses, checked at construction, so that a gin binding
of the wrong type (`Experiment.num_steps = 'x'`) ends in one line naming the knob, not in a
TypeError far away inside the run.

    @dataclasses.dataclass(frozen=True)
    class RolloutConfig:
        group_size: int = 16
        def __post_init__(self) -> None:
            check_field_types(self)      # RolloutConfig.group_size = 'x': expected an int

Annotations understood: bool, int (not bool), float (an int is accepted), str, None, unions
(`X | None`), `tuple[X, ...]` / `tuple[X, Y]`, `Literal[...]`, other classes (isinstance), and
`Any`; an annotation it cannot read is not checked.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

_NAMES = {bool: "a bool", int: "an int", float: "a number", str: "a string", type(None): "None"}
_PLURALS = {bool: "bools", int: "ints", float: "numbers", str: "strings"}


class ConfigTypeError(ValueError):
    """A configuration field holds a value of the wrong type (a ValueError: bad input)."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 -- an unresolvable annotation: check nothing rather than fail
        return {}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp in _NAMES:
        return _NAMES[tp]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        inner = typing.get_args(tp)
        if len(inner) == 2 and inner[1] is Ellipsis:
            return f"a tuple of {_PLURALS.get(inner[0], _describe(inner[0]) + ' values')}, e.g. (a, b)"
        return f"a tuple ({', '.join(_describe(a) for a in inner)})"
    return f"a {getattr(tp, '__name__', tp)}"


def _matches(value: Any, tp: Any) -> bool:
    if tp is Any:
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is type(None) or tp is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args)))
    if origin is not None:  # list[...], dict[...], Mapping[...]: the container type only
        return isinstance(value, origin) if isinstance(origin, type) else True
    if not isinstance(tp, type) or getattr(tp, "_is_protocol", False):  # a Protocol: duck-typed, not checked
        return True
    return isinstance(value, tp)


def check_field_types(obj: Any) -> None:
    """Raises ConfigTypeError naming `Class.field = value` and the expected type for the first
    field of the dataclass `obj` whose value does not match its annotation."""
    cls = type(obj)
    hints = _hints(cls)
    for field in dataclasses.fields(obj):
        tp = hints.get(field.name)
        if tp is None:
            continue
        value = getattr(obj, field.name)
        if not _matches(value, tp):
            raise ConfigTypeError(f"{cls.__name__}.{field.name} = {value!r}: expected {_describe(tp)}")
