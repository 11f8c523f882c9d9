"""IRC mode letters for the core's mode names (rooms and users), both ways."""

from __future__ import annotations

from collections.abc import Iterable

from chatserver.core.events import ModeItem
from chatserver.core.names import ROOM_MODE_LETTERS

# Room modes: the core's one letter table (line chat accepts the same letters).
CHANNEL_LETTERS: dict[str, str] = ROOM_MODE_LETTERS
CHANNEL_MODES: dict[str, str] = {letter: name for name, letter in CHANNEL_LETTERS.items()}
# ISUPPORT CHANMODES groups: A lists, B always a parameter, C a parameter when set, D flags.
LIST_LETTERS = "Ibe"
ALWAYS_PARAM_LETTERS = "k"
SET_PARAM_LETTERS = "l"
FLAG_LETTERS = "CimnstR"
STATUS_LETTERS = "ov"
CHANMODES_TOKEN = f"{LIST_LETTERS},{ALWAYS_PARAM_LETTERS},{SET_PARAM_LETTERS},{FLAG_LETTERS}"
# PREFIX=(ov)@+ : status -> prefix character, highest first.
STATUS_PREFIX = {"op": "@", "voice": "+"}
PREFIX_STATUS = {"@": "op", "+": "voice"}

# User modes.
USER_LETTERS: dict[str, str] = {"invisible": "i", "wallops": "w", "bot": "B", "oper": "o"}
USER_MODES: dict[str, str] = {letter: name for name, letter in USER_LETTERS.items()}


def letter_of(mode: str) -> str:
    """The channel letter of a core mode name (``?`` for one IRC has no letter for)."""
    return CHANNEL_LETTERS.get(mode) or USER_LETTERS.get(mode) or "?"


def format_changes(changes: Iterable[ModeItem]) -> list[str]:
    """``[+o-v, nick, nick2]`` for a sequence of applied changes (the MODE line's parameters)."""
    letters: list[str] = []
    args: list[str] = []
    sign = ""
    for item in changes:
        want = "+" if item.adding else "-"
        if want != sign:
            letters.append(want)
            sign = want
        letters.append(letter_of(item.mode))
        if item.arg is not None:
            args.append(item.arg)
    return ["".join(letters), *args] if letters else []


def user_mode_string(modes: Iterable[str]) -> str:
    """``+iwB`` for a set of core user mode names, in a stable order."""
    return "+" + "".join(
        USER_LETTERS[m] for m in ("invisible", "wallops", "bot", "oper") if m in modes
    )
