"""Attribute filters on recommendations: ``brand=Acme``, ``price<=100``, ``on_sale=true``.

A filter is ``NAME OP VALUE`` with ``OP`` one of ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``.
``=`` and ``!=`` compare canonical values: numbers by value (``10`` equals ``10.0``), booleans
as ``true``/``false``, text exactly. The order operators need a number and match only items
whose attribute is a number. Filters on different names must all hold; several ``=`` filters
on one name mean any of those values (``brand=Acme&brand=Terra``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["=", "!=", "<", "<=", ">", ">="]
ORDER_OPS = ("<", "<=", ">", ">=")
_FILTER = re.compile(r"^([A-Za-z0-9_.:\-]{1,64})(<=|>=|!=|=|<|>)(.*)$", re.DOTALL)


class FilterError(ValueError):
    """A filter that cannot be read; the message says how to write it."""


def canonical(value: str | float | bool) -> str:
    """The form ``=`` compares: ``true``/``false``, a number's shortest form, or the text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return value


def _number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class AttributeFilter:
    name: str
    op: Op
    value: str  # canonical form for = and !=
    number: float | None  # the value as a number, for the order operators

    @classmethod
    def parse(cls, text: str) -> AttributeFilter:
        match = _FILTER.match(text)
        if match is None:
            raise FilterError(
                f"attribute filter {text!r} is not NAME OP VALUE with OP one of = != < <= > >= "
                "and NAME 1-64 letters, digits or _.:- (e.g. brand=Acme, price<=100)"
            )
        name, op, raw = match.group(1), match.group(2), match.group(3).strip()
        if not raw:
            raise FilterError(f"attribute filter {text!r} has no value after {op!r}")
        if len(raw) > 256:
            raise FilterError(f"attribute filter {text!r}: the value is over 256 characters")
        number = _number(raw)
        if op in ORDER_OPS and number is None:
            raise FilterError(
                f"attribute filter {text!r}: {op} compares numbers, and {raw!r} is not a "
                "finite number"
            )
        lowered = raw.lower()
        if number is not None:
            value = canonical(number)
        elif lowered in ("true", "false"):
            value = lowered
        else:
            value = raw
        return cls(name=name, op=op, value=value, number=number)  # type: ignore[arg-type]
