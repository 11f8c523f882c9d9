"""Debian's Prosody as a reference XMPP server, run by a test on free loopback ports.

:class:`ProsodyProcess` writes a private config (the same domains chatserver serves:
``localhost`` and ``conference.localhost``), a data directory and a self-signed certificate
under the test's temporary directory, creates accounts with ``prosodyctl`` and runs
``prosody`` in the foreground (never the system service, never /etc/prosody).  Plain-text
logins are allowed on loopback so that raw clients need no TLS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.server import _LIVE, _die_with_parent, free_port

PROSODY = shutil.which("prosody")
PROSODYCTL = shutil.which("prosodyctl")

MODULES = (
    "roster",
    "saslauth",
    "tls",
    "disco",
    "carbons",
    "pep",
    "blocklist",
    "vcard_legacy",
    "bookmarks",
    "smacks",
    "csi_simple",
    "mam",
    "register",
    "ping",
)

CONFIG = """\
-- Written by the test suite: a private Prosody on loopback.
daemonize = false
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}/certs"
plugin_paths = {{}}
log = {{ info = "{dir}/prosody.log"; error = "{dir}/error.log" }}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
s2s_ports = {{}}
component_ports = {{}}
http_ports = {{}}
https_ports = {{}}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
allow_registration = true
min_seconds_between_registrations = 0
authentication = "internal_hashed"
storage = "internal"
modules_enabled = {{ {modules} }}
modules_disabled = {{ "s2s"; "posix"; "http"; "admin_shell"; "offline" }}
muc_room_locking = false
muc_room_default_public = true
muc_room_default_public_jids = true

VirtualHost "localhost"
    ssl = {{ key = "{dir}/certs/localhost.key"; certificate = "{dir}/certs/localhost.crt" }}

Component "conference.localhost" "muc"
    modules_enabled = {{ "muc_mam" }}
"""


def available() -> bool:
    return PROSODY is not None and PROSODYCTL is not None


class ProsodyProcess:
    """A started Prosody: ``port`` is its client-to-server port on 127.0.0.1."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = Path(tmp_path)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "certs").mkdir(exist_ok=True)
        self.port = free_port()
        self.config_path = self.dir / "prosody.cfg.lua"
        modules = "; ".join(f'"{m}"' for m in MODULES)
        self.config_path.write_text(CONFIG.format(dir=self.dir, port=self.port, modules=modules))
        self.proc: subprocess.Popen[bytes] | None = None
        self._certificate()

    def _certificate(self) -> None:
        certs = self.dir / "certs"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(certs / "localhost.key"),
                "-out",
                str(certs / "localhost.crt"),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def create_account(self, name: str, password: str) -> None:
        """The operator's way, before or while the server runs."""
        assert PROSODYCTL is not None
        subprocess.run(
            [
                PROSODYCTL,
                "--config",
                str(self.config_path),
                "register",
                name,
                "localhost",
                password,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self, timeout: float = 20.0) -> ProsodyProcess:
        assert PROSODY is not None
        out = open(self.dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(
            [PROSODY, "--config", str(self.config_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
            preexec_fn=_die_with_parent,
        )
        _LIVE.add(self.proc)
        out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prosody exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"prosody did not listen:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log", "prosody.log"):
            with contextlib.suppress(FileNotFoundError):
                parts.append((self.dir / name).read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _LIVE.discard(proc)
