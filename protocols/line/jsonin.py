"""Decoding a JSON command: the edge where line chat's JSON input becomes Python values.

JSON can spell what no other protocol can (``"\\ud800"``, ``"\\u0000"``), numbers that are
not numbers (``NaN``, ``Infinity``, ``1e999``) and values nested thousands deep; none of it
gets past here.  Every string, keys and the ``tag`` included, follows the core's text rule
(:func:`chatserver.core.names.text_problem`), so what a command carries can be written to
every other protocol, and the ``tag`` copied into the answer is always valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from chatserver.core.names import text_problem

# How deep a ``tag`` may nest (an object in a list is two levels); clients use a number or
# a string.
MAX_TAG_DEPTH = 8


class JsonRefused(ValueError):
    """The line is not a JSON command this server accepts; ``code`` and ``message`` are the
    error to answer.  ``tag`` and ``cmd`` are the command's, when they are fit to echo."""

    def __init__(self, code: str, message: str, tag: Any = None, cmd: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.tag = tag
        self.cmd = cmd


def _no_constant(name: str) -> Any:
    raise JsonRefused("bad_json", f"not a JSON object: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("bad_json", f"not a JSON object: {text} is too large a number")
    return value


def decode_command(text: str) -> dict[str, Any]:
    """The object of one JSON command line; raises :class:`JsonRefused`."""
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused("bad_json", "not a JSON object: it nests too deeply") from None
    except ValueError as err:
        raise JsonRefused("bad_json", f"not a JSON object: {err}") from None
    if not isinstance(obj, dict):
        raise JsonRefused("bad_json", 'a JSON command is an object such as {"cmd": "help"}')
    tag = obj.get("tag")
    if tag is not None:
        refusal = _refusal("tag", tag, MAX_TAG_DEPTH)
        if refusal is not None:
            raise refusal
    name = obj.get("cmd")
    cmd = name if isinstance(name, str) and text_problem(name) is None else None
    for key, value in obj.items():
        if key == "tag":
            continue
        problem = text_problem(key)
        refusal = (
            JsonRefused("bad_text", f"field {key!r}: {problem}")
            if problem is not None
            # Command fields are strings or numbers (the dispatcher refuses anything else,
            # without showing it); their depth is JSON's own limit.
            else _refusal(key, value, None)
        )
        if refusal is not None:
            refusal.tag, refusal.cmd = tag, cmd
            raise refusal
    return obj


def _refusal(field: str, value: Any, max_depth: int | None) -> JsonRefused | None:
    """Why ``value`` cannot pass, or None.  Iterative: no depth can make it recurse."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return JsonRefused("bad_text", f"field {field!r}: {problem}")
        elif isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                return JsonRefused(
                    "bad_json", f"field {field!r} nests more than {max_depth} levels deep"
                )
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)
    return None
