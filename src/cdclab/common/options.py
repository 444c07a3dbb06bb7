"""Closed option sets, checked at run time.

A parameter typed ``Literal[...]`` is only checked by mypy; a DAG param or a run conf is free text at
run time, and a typo in an ``if mode == "a": ... else: ...`` silently picks the other branch (``"sfot"``
would delete hard). :func:`one_of` refuses any value outside the set, naming the parameter, the value
and the choices, before anything is read or written::

    delete_mode = one_of("delete_mode", delete_mode, DeleteMode)
"""

from __future__ import annotations

from typing import Any, TypeVar, get_args

T = TypeVar("T")


class InvalidOptionError(ValueError):
    """A value outside its closed option set."""

    def __init__(self, name: str, value: object, choices: tuple[Any, ...]) -> None:
        super().__init__(f"{name}={value!r} is not one of {', '.join(repr(c) for c in choices)}")
        self.name, self.value, self.choices = name, value, choices


def choices(options: Any) -> tuple[Any, ...]:
    """The values of a ``Literal[...]`` type, or of a tuple/list/set/frozenset of values."""
    if isinstance(options, (tuple, list)):
        return tuple(options)
    if isinstance(options, (set, frozenset)):
        return tuple(sorted(options))
    values = get_args(options)
    if not values:
        raise TypeError(f"{options!r} is not a Literal type or a collection of values")
    return values


def one_of(name: str, value: T, options: Any) -> T:
    """``value`` when it is one of ``options`` (a ``Literal`` type or a collection), else
    :class:`InvalidOptionError`."""
    allowed = choices(options)
    if value not in allowed:
        raise InvalidOptionError(name, value, allowed)
    return value
