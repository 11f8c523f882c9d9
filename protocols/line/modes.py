"""Room modes in line chat: the core's mode names as words, with IRC's letters as short forms.

``/mode dev +moderated -topic_lock +key secret`` and ``/mode dev +m-t+k secret`` mean the
same.  Output always uses the words: they need no legend.
"""

from __future__ import annotations

from chatserver.core.events import ModeItem
from chatserver.core.names import ROOM_MODE_LETTERS, ROOM_MODES_BY_LETTER

# The core's one letter table (IRC's letters), and what line chat used to write for
# registered_only before it took IRC's: still understood.
LETTERS: dict[str, str] = {**ROOM_MODES_BY_LETTER, "r": "registered_only"}

# Modes whose change takes an argument: (when adding, when removing).
_TAKES_ARG: dict[str, tuple[bool, bool]] = {
    "key": (True, False),
    "limit": (True, False),
    "ban": (True, True),
    "except": (True, True),
    "invite": (True, True),
    "op": (True, True),
    "voice": (True, True),
}


class ModeSyntaxError(ValueError):
    """The mode changes could not be read; the message says why."""


def mode_word(text: str) -> str | None:
    """The core mode name for ``text`` (a word, any case, '-' or '_'), or None."""
    word = text.lower().replace("-", "_")
    return word if word in ROOM_MODE_LETTERS else None


def takes_arg(mode: str, adding: bool) -> bool:
    wants = _TAKES_ARG.get(mode)
    return wants is not None and wants[0 if adding else 1]


def parse_changes(tokens: list[str]) -> list[ModeItem]:
    """Read ``+word [arg]`` / ``-word`` tokens, or IRC-style letter groups such as ``+mt-s``.

    Arguments follow the token that needs them, in order.
    """
    items: list[ModeItem] = []
    queue = list(tokens)
    while queue:
        token = queue.pop(0)
        if len(token) < 2 or token[0] not in "+-":
            raise ModeSyntaxError(f"expected +mode or -mode, got {token!r}")
        word = mode_word(token[1:])
        if word is not None:
            changes = [(token[0] == "+", word)]
        else:
            changes = _letters(token)
        for adding, mode in changes:
            arg = None
            if takes_arg(mode, adding):
                if not queue:
                    sign = "+" if adding else "-"
                    raise ModeSyntaxError(f"{sign}{mode} needs an argument")
                arg = queue.pop(0)
            items.append(ModeItem(adding, mode, arg))
    return items


def _letters(token: str) -> list[tuple[bool, str]]:
    changes: list[tuple[bool, str]] = []
    adding = True
    for ch in token:
        if ch in "+-":
            adding = ch == "+"
            continue
        mode = LETTERS.get(ch)
        if mode is None:
            raise ModeSyntaxError(f"unknown mode {token!r}")
        changes.append((adding, mode))
    if not changes:
        raise ModeSyntaxError(f"expected +mode or -mode, got {token!r}")
    return changes


def format_changes(changes: tuple[ModeItem, ...] | list[ModeItem]) -> str:
    """``+moderated -topic_lock +op bob``."""
    parts = []
    for item in changes:
        text = ("+" if item.adding else "-") + item.mode
        if item.arg is not None and takes_arg(item.mode, item.adding):
            text += f" {item.arg}"
        parts.append(text)
    return " ".join(parts)
