"""irctest controller for chatserver: runs a fresh ``chatserver run`` for each test case.

irctest (https://github.com/progval/irctest) imports this module by name
(``--controller chatserver_controller``, with this directory on ``PYTHONPATH``); ``make
irctest`` does both.  Each test case gets its own data directory and configuration: the
IRC listener on the port irctest chose, the other protocols off, the operator irctest logs
in as (``operuser``/``operpassword``), and flood control off for loopback clients, which
irctest's bursts of commands would otherwise wait on.  Accounts are made the operator's way,
with ``chatserver account create`` while the server runs.

The server is found as ``$CHATSERVER_PYTHON -m chatserver`` (default: the Python running
irctest), so irctest may run from its own virtualenv.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from irctest import patma
from irctest.basecontrollers import (
    BaseServerController,
    DirectoryBasedController,
    ProcessStopped,
)
from irctest.runner import NotImplementedByController
from irctest.specifications import Capabilities, OptionalBehaviors

OPER_NAME = "operuser"
OPER_PASSWORD = "operpassword"


def _python() -> str:
    return os.environ.get("CHATSERVER_PYTHON") or sys.executable


@functools.cache
def _hash(password: str) -> str:
    """A password's hash for the config, made once per irctest run (scrypt is slow on purpose)."""
    out = subprocess.run(
        [_python(), "-m", "chatserver", "hash-password"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


class ChatserverController(BaseServerController, DirectoryBasedController):
    software_name = "chatserver"
    supported_sasl_mechanisms = {"PLAIN", "SCRAM-SHA-256"}
    supports_sts = False
    nickserv = "NickServ"
    # A ban "$m:<mask>" mutes (EXTBAN=$,am).
    extban_mute_char = "m"
    _log: Any = None

    # What the server offers in CAP LS and ISUPPORT (protocols/irc/README.md).
    capabilities = frozenset(
        (
            Capabilities.ACCOUNT_NOTIFY,
            Capabilities.ACCOUNT_TAG,
            Capabilities.AWAY_NOTIFY,
            Capabilities.BATCH,
            Capabilities.ECHO_MESSAGE,
            Capabilities.EXTENDED_JOIN,
            Capabilities.EXTENDED_MONITOR,
            Capabilities.LABELED_RESPONSE,
            Capabilities.MESSAGE_REDACTION,
            Capabilities.MESSAGE_TAGS,
            Capabilities.MULTI_PREFIX,
            Capabilities.SERVER_TIME,
            Capabilities.SETNAME,
        )
    )

    optional_behaviors = frozenset(
        (
            OptionalBehaviors.BAN_EXCEPTION_MODE,
            OptionalBehaviors.CAP_REQ_MINUS,
            OptionalBehaviors.INVITE_EXCEPTION_MODE,
            OptionalBehaviors.MULTI_JOIN,
            OptionalBehaviors.MULTI_PRIVMSG,
            OptionalBehaviors.NO_CTCP,
            OptionalBehaviors.SASL_AFTER_REGISTRATION,
            OptionalBehaviors.SASL_REAUTHENTICATION,
            OptionalBehaviors.ELIST_C,
            OptionalBehaviors.ELIST_M,
            OptionalBehaviors.ELIST_N,
            OptionalBehaviors.ELIST_U,
        )
    )

    isupport = {
        "BOT": "B",
        "CASEMAPPING": "ascii",
        "ELIST": patma.ANYSTR,
        "INVEX": patma.ANYSTR,
        "MONITOR": patma.ANYSTR,
        "MSGREFTYPES": "msgid,timestamp",
        "PREFIX": "(ov)@+",
        "STATUSMSG": "@+",
        "TARGMAX": patma.ANYSTR,
        "UTF8ONLY": None,
        "WHOX": None,
    }

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None = None,
        websocket_hostname: str | None = None,
        websocket_port: int | None = None,
    ) -> None:
        if websocket_hostname is not None or websocket_port is not None:
            raise NotImplementedByController("Websocket")
        assert self.proc is None
        self.create_config()
        assert self.directory is not None
        self.port = port
        self.hostname = hostname
        irc: dict[str, Any] = {
            "enabled": True,
            "listen": [hostname],
            "flood_exempt": ["127.0.0.0/8", "::1"],
            "registration_before_connect": self.test_config.account_registration_before_connect,
        }
        if password is not None:
            irc["password"] = _hash(password)
        faketime_cmd: list[str] = []
        if faketime and shutil.which("faketime"):
            # The server's clock runs fast (a minute a second): its registration deadline
            # and pings must not come before the test's clients have had time to act.
            faketime_cmd = ["faketime", "-f", faketime]
            self.faketime_enabled = True
            irc.update(registration_timeout=86400.0, ping_interval=86400.0)
        if ssl:
            # The TLS port is the one irctest connects to; the plain one is somewhere else.
            _, plain_port = self.get_hostname_and_port()
            irc.update(port=plain_port, tls_port=port)
        else:
            irc.update(port=port, tls_port=0)
        sections: dict[str, dict[str, Any]] = {
            "server": {
                "name": "My.Little.Server",
                "network": "testnet",
                "description": "test server",
                "listen": [hostname],
                "log_level": "debug" if self.debug_mode else "warn",
            },
            "chat": {
                "cloak_secret": "irctest",
                # irctest registers accounts with passwords as short as three letters.
                "min_password_length": 1,
                "registration_email_required": (
                    self.test_config.account_registration_requires_email
                ),
                # Messages reach the database at once, so CHATHISTORY sees them.
                "history_flush_interval": 0.0,
            },
            "irc": irc,
            "line": {"enabled": False},
            "xmpp": {"enabled": False},
            "web": {"enabled": False},
        }
        lines = []
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
            lines.append("")
        lines += [
            "[[operators]]",
            f"name = {_toml(OPER_NAME)}",
            f"password = {_toml(_hash(OPER_PASSWORD))}",
            "",
        ]
        config_path = self.directory / "chatserver.toml"
        config_path.write_text("\n".join(lines))
        data_dir = self.directory / "data"
        data_dir.mkdir()

        # The server's log, shown if it stops (irctest removes the directory after the test).
        log_kwargs: dict[str, Any] = {}
        if not self.debug_mode:
            self._log = open(self.directory / "server.log", "wb")
            log_kwargs = {"stdout": self._log, "stderr": self._log}
        self.proc = self.execute(
            [
                *faketime_cmd,
                _python(),
                "-m",
                "chatserver",
                "run",
                "--config",
                str(config_path),
                "--data-dir",
                str(data_dir),
            ],
            proc_name="chatserver",
            cwd=str(Path(self.directory)),
            **log_kwargs,
        )

    def check_is_alive(self) -> None:
        try:
            super().check_is_alive()
        except ProcessStopped as stopped:
            log = self.directory / "server.log" if self.directory else None
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ProcessStopped(f"{stopped}; the server said:\n{tail}") from None

    def kill(self) -> None:
        super().kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_for_services(self) -> None:
        # NickServ is part of the server: it is there as soon as the port is.
        pass

    def registerUser(self, case: Any, username: str, password: str | None = None) -> None:
        """Create the account the operator's way, with ``chatserver account create`` on the
        running server's database (passwords of any length: irctest uses some that would
        not fit in an IRC line)."""
        assert password is not None and self.directory is not None
        done = subprocess.run(
            [
                _python(),
                "-m",
                "chatserver",
                "account",
                "create",
                username,
                "--password-stdin",
                "--config",
                str(self.directory / "chatserver.toml"),
                "--data-dir",
                str(self.directory / "data"),
            ],
            input=password + "\n",
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"could not register {username}: {done.stderr.strip()}")


def get_irctest_controller_class() -> type[ChatserverController]:
    return ChatserverController
