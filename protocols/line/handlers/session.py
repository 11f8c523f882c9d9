"""Line-chat commands about the connection itself: format, echo, help, ping, quit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocols.line.commands import (
    COMMANDS,
    REST,
    Args,
    Command,
    CommandError,
    Param,
    Reply,
    command,
    lookup,
)
from protocols.line.render import INFO

if TYPE_CHECKING:
    from protocols.line.connection import LineConnection


@command(
    "format",
    "json|text",
    "Switch this connection between text lines and JSON Lines (one JSON object per line;"
    " commands may then also be JSON objects).",
    Param("format", required=True),
    json='{"cmd": "format", "format": "text"}',
    before_nick=True,
)
def do_format(c: LineConnection, a: Args) -> Reply:
    mode = a["format"].lower()
    if mode not in ("json", "text"):
        raise CommandError("bad_argument", "the format is json or text", usage=True)
    c.mode = mode
    return Reply([f"{INFO}output format: {mode}"], {"format": mode})


@command(
    "echo",
    "[on|off]",
    "Show your own messages back to you as the others see them (off by default: what you"
    " type is on your screen already). Without an argument, say whether it is on.",
    Param("state"),
    json='{"cmd": "echo", "state": "on"}',
    before_nick=True,
)
def do_echo(c: LineConnection, a: Args) -> Reply:
    state = a.get("state")
    if state is not None:
        state = state.lower()
        if state not in ("on", "off"):
            raise CommandError("bad_argument", "echo is on or off", usage=True)
        c.echo = state == "on"
    shown = "on" if c.echo else "off"
    return Reply([f"{INFO}echo: {shown}"], {"echo": c.echo})


@command(
    "help",
    "[command]",
    "List the commands, or explain one.",
    Param("command"),
    json='{"cmd": "help", "command": "join"}',
    before_nick=True,
    aliases=("?", "commands"),
)
def do_help(c: LineConnection, a: Args) -> Reply:
    name = a.get("command")
    if name:
        cmd = lookup(name.lstrip("/"))
        if cmd is None:
            raise CommandError(
                "unknown_command", f"unknown command: /{name.lstrip('/')} (/help lists them)"
            )
        lines = [f"{INFO}usage: {cmd.usage_line}", f"{INFO}{cmd.help}"]
        if cmd.json:
            lines.append(f"{INFO}as JSON: {cmd.json}")
        return Reply(lines, {"commands": [_help_json(cmd)]})
    shown = [cmd for cmd in COMMANDS.values() if not cmd.hidden]
    lines = [f"{INFO}commands (/help <command> explains one):"]
    lines.extend(f"{INFO}  {cmd.usage_line}" for cmd in shown)
    lines.append(f"{INFO}plain lines go to your current room; // starts a line that begins with /")
    return Reply(lines, {"commands": [_help_json(cmd) for cmd in shown]})


def _help_json(cmd: Command) -> dict[str, Any]:
    return {"name": cmd.name, "usage": cmd.usage_line, "help": cmd.help, "json": cmd.json}


@command(
    "ping",
    "",
    "Check that the server is there (it answers pong). Any line answers the server's ping.",
    json='{"cmd": "ping"}',
    before_nick=True,
    aliases=("pong",),
)
def do_ping(c: LineConnection, a: Args) -> Reply:
    return Reply([f"{INFO}pong"])


@command(
    "quit",
    "[reason]",
    "Leave the server; the reason is shown to the people in your rooms.",
    Param("reason", REST),
    json='{"cmd": "quit", "reason": "bye"}',
    before_nick=True,
    aliases=("exit", "bye"),
)
def do_quit(c: LineConnection, a: Args) -> Reply:
    text = a.get("reason")
    # Marked as the user's own words, as IRC marks them, so that no one can quit with what
    # looks like the server's reason ("Excess flood", "Ping timeout", a kill).
    reason = f"Quit: {text}" if text else "Quit"
    return Reply([f"{INFO}bye"], {"reason": reason}, then=lambda: c.quit(reason))
