"""Reloading the configuration on SIGHUP: apply what can change live, refuse the rest.

What applies at once: the MOTD, TLS certificate and key (new connections; open ones keep their
session), flood and connection limits, the ``[chat]`` settings but those in
:data:`RESTART_ONLY_SETTINGS`, idle timeouts and the other per-protocol settings, operators and
bans.  What cannot (a port, a listen address, a protocol switched on or off, the data directory,
the storage, the XMPP domain, the metrics listener, the log setup) is refused key by key: each
is logged with the value kept, and the rest of the file still applies.  A file with errors
changes nothing.

Protocol factories hold their section in ``factory.config``; a reload replaces that attribute
(and ``operators``, ``server`` and an IRC-style ``motd_lines`` where a factory has them), or
calls ``factory.reload_config(config)`` when a factory defines one.  Connections that read
``factory.config`` when they need a value see the change at once; those that copied a value
when they opened keep it until they reconnect.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from chatserver.config import (
    DEFAULTS_SOURCE,
    PROTOCOL_SECTIONS,
    SECTIONS,
    Config,
    ConfigError,
    load_config,
)
from chatserver.core.settings import RESTART_ONLY_SETTINGS
from chatserver.server.tls import TlsError

if TYPE_CHECKING:
    from chatserver.server.app import ChatServer

log = Logger(namespace="chatserver.reload")

ALL = "*"
# Section -> keys that only a restart can change (ALL: every key of the section).
RESTART_ONLY: dict[str, frozenset[str] | str] = {
    "server": frozenset(
        {"name", "data_dir", "listen", "log_format", "log_level", "memory_trim_interval"}
    ),
    "storage": ALL,
    "chat": RESTART_ONLY_SETTINGS,
    "metrics": frozenset({"enabled", "listen", "port"}),
    "xmpp": frozenset({"domain", "muc_service"}),
}
# Every protocol: what it listens on, and whether it runs.
LISTENER_KEYS = frozenset({"enabled", "port", "tls_port", "listen"})


@dataclass(frozen=True, slots=True)
class Refusal:
    key: str  # "[section] key"
    kept: Any
    wanted: Any


@dataclass(slots=True)
class Outcome:
    """What a reload did: ``applied`` is False when the file could not be used at all."""

    applied: bool
    config: Config
    refused: list[Refusal] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def restart_only(section: str, key: str) -> bool:
    keys = RESTART_ONLY.get(section, frozenset())
    if section in PROTOCOL_SECTIONS and key in LISTENER_KEYS:
        return True
    return keys == ALL or key in keys


def merge(old: Config, new: Config) -> tuple[Config, list[Refusal], list[str]]:
    """``new`` with every restart-only key kept at its ``old`` value.

    Returns (the config to use, the refusals, the "[section] key" names that do change).
    """
    refused: list[Refusal] = []
    changed: list[str] = []
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        before, after = getattr(old, name), getattr(new, name)
        keep: dict[str, Any] = {}
        for f in dataclasses.fields(before):
            was, now = getattr(before, f.name), getattr(after, f.name)
            if was == now:
                continue
            if restart_only(name, f.name):
                keep[f.name] = was
                refused.append(Refusal(f"[{name}] {f.name}", was, now))
            else:
                changed.append(f"[{name}] {f.name}")
        sections[name] = dataclasses.replace(after, **keep) if keep else after
    if old.operators != new.operators:
        changed.append("[[operators]]")
    if old.webirc != new.webirc:
        changed.append("[[webirc]]")
    if old.bans != new.bans:
        changed.append("[[bans]]")
    merged = dataclasses.replace(new, **sections)
    return merged, refused, changed


def reload(server: ChatServer) -> Outcome:
    """Read the configuration file again and apply it to the running ``server``."""
    old = server.config
    path = None if old.source == DEFAULTS_SOURCE else old.source
    try:
        # The data directory in use stays (it came from the file or from --data-dir).
        new = load_config(path, data_dir_override=str(old.data_dir))
    except ConfigError as err:
        log.error(
            "reload: {source} has problems; nothing changed:\n{problems}",
            source=old.source,
            problems="\n".join(err.problems),
        )
        return Outcome(False, old, problems=list(err.problems))
    config, refused, changed = merge(old, new)
    for refusal in refused:
        log.warn(
            "reload: {key} cannot change while the server runs; keeping {kept} (restart to"
            " use {wanted})",
            key=refusal.key,
            kept=_show(refusal.kept),
            wanted=_show(refusal.wanted),
        )
    server.config = config
    _apply(server, config)
    log.info(
        "reload: configuration applied from {source}; changed: {changed}",
        source=old.source,
        changed=", ".join(changed) or "nothing",
    )
    return Outcome(True, config, refused, changed)


def _apply(server: ChatServer, config: Config) -> None:
    chat = server.chat
    if chat is not None:
        chat.apply_settings(config.chat)
        gone = chat.set_config_bans(config.bans)
        if gone:
            log.info("reload: banned users disconnected: {nicks}", nicks=" ".join(gone))
    for protocol, factory in server.factories():
        section = getattr(config, protocol, None)
        if section is None:
            continue
        hook = getattr(factory, "reload_config", None)
        if callable(hook):
            hook(config)
            continue
        factory.config = section
        if hasattr(factory, "operators"):
            factory.operators = tuple(config.operators)
        if hasattr(factory, "webirc"):
            factory.webirc = tuple(config.webirc)
        if hasattr(factory, "server"):
            factory.server = config.server
        if hasattr(factory, "motd_lines") and hasattr(section, "motd_file"):
            load_motd = getattr(sys.modules.get(type(factory).__module__), "load_motd", None)
            if callable(load_motd):
                factory.motd_lines = load_motd(section.motd_file)
    _reload_tls(server)


def _reload_tls(server: ChatServer) -> None:
    tls = server.tls
    if not tls.loaded:
        # Nothing uses TLS yet: the files are read on first use.
        return
    try:
        tls.reload()
    except TlsError as err:
        log.error("reload: TLS certificate not changed: {error}", error=str(err))
        return
    log.info("reload: TLS certificate and key loaded")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def install_sighup(reactor: Any, server: ChatServer) -> None:
    """SIGHUP reloads the configuration (``systemctl reload``, ``kill -HUP``)."""
    import signal

    def reload_now() -> None:
        log.info("received SIGHUP, reloading the configuration")
        try:
            reload(server)
        except Exception:
            log.failure("reload failed; the configuration in use is unchanged")

    def received(_signum: int, _frame: object) -> None:
        # Only hand over to the reactor: the reload must not run inside a signal handler.
        reactor.callFromThread(reload_now)

    signal.signal(signal.SIGHUP, received)
