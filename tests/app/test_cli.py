from __future__ import annotations

import datetime
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chatserver.cli import _parser
from tests.app.helpers import EXAMPLE_CONFIG, REPO, TIMEOUT, clean_env, run_cli, write_toml

# -- check-config ------------------------------------------------------------------------------


def test_check_config_ok(tmp_path: Path) -> None:
    path = write_toml(tmp_path / "c.toml", {"line": {"port": 4000}})
    result = run_cli("check-config", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_check_config_of_the_example() -> None:
    result = run_cli("check-config", str(EXAMPLE_CONFIG))
    assert (result.returncode, result.stdout) == (0, "ok\n")


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[line]\nport = "abc"\n[server]\nlog_format = "xml"\n')
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f'{path}: [line] port: expected an integer from 1 to 65535, got "abc"',
        f'{path}: [server] log_format: expected one of "text", "json", got "xml"',
    ]


def test_check_config_of_a_missing_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml: cannot read the file" in result.stderr


def test_check_config_loads_the_configured_certificate(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate\n")
    (tmp_path / "k.pem").write_text("not a key\n")
    path = write_toml(
        tmp_path / "c.toml",
        {"tls": {"certificate": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")}},
    )
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert "no PEM certificate" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert run_cli().returncode == 2
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("check-config").returncode == 2
    assert run_cli("run", "--log-format", "xml").returncode == 2


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[line]\nport = 0\n")
    result = run_cli("run", "--config", str(path), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert f"{path}: [line] port: expected an integer from 1 to 65535, got 0" in result.stderr
    assert not (tmp_path / "d").exists()


def test_console_script_is_declared() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["chatserver"] == "chatserver.cli:main"


# -- gen-cert ----------------------------------------------------------------------------------


def test_gen_cert_makes_then_keeps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = run_cli("gen-cert", "--data-dir", str(data))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("made ")
    key = data / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    second = run_cli("gen-cert", "--data-dir", str(data))
    assert second.returncode == 0
    assert second.stdout.startswith("kept the existing ")
    assert key.read_bytes() == before
    forced = run_cli("gen-cert", "--data-dir", str(data), "--force")
    assert forced.returncode == 0
    assert key.read_bytes() != before


# -- account -----------------------------------------------------------------------------------


def account(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_cli("account", *args, "--data-dir", str(data), stdin=stdin)


def password_ok(data: Path, name: str, password: str) -> bool:
    """Check a password the way the server does, against the same database file."""
    script = """
import sys
from twisted.internet import defer, task, threads
from chatserver.config import load_config
from chatserver.core.accounts import AccountManager
from chatserver.storage.sqlite import SqliteStore

async def main(reactor, data, name, password):
    config = load_config(None, data_dir_override=data)
    store = SqliteStore(config.storage.path, reactor=reactor)
    await store.open()
    accounts = AccountManager(store, config.chat, clock=reactor, run_in_thread=threads.deferToThread)
    try:
        await accounts.verify_password(name, password, "127.0.0.1")
        print("ok")
    except Exception as err:
        print("refused", type(err).__name__)
    await store.close()

task.react(lambda reactor, *a: defer.ensureDeferred(main(reactor, *a)), sys.argv[1:])
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(data), name, password],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip() == "ok"


def test_account_create_list_and_duplicate(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = account(data, "create", "Alice", "--password-stdin", stdin="sekrit-1\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "created account Alice\n"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # Without --password-stdin, a stdin that is not a terminal is read as well.
    assert account(data, "create", "bob", stdin="sekrit-2\n").returncode == 0

    again = account(data, "create", "alice", stdin="whatever\n")
    assert again.returncode == 1
    assert "already registered" in again.stderr

    listed = account(data, "list")
    assert listed.returncode == 0
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [row[0] for row in rows] == ["Alice", "bob"]
    assert all(row[1].endswith("Z") for row in rows)
    assert password_ok(data, "alice", "sekrit-1")


def test_account_passwd_and_delete(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert account(data, "create", "carol", stdin="first-password\n").returncode == 0
    changed = account(data, "passwd", "carol", stdin="second-password\n")
    assert changed.returncode == 0, changed.stderr
    assert password_ok(data, "carol", "second-password")
    assert not password_ok(data, "carol", "first-password")

    missing = account(data, "passwd", "nobody", stdin="some-password\n")
    assert missing.returncode == 1
    assert "nobody is not registered" in missing.stderr

    deleted = account(data, "delete", "carol")
    assert (deleted.returncode, deleted.stdout) == (0, "deleted account carol\n")
    assert account(data, "list").stdout == ""
    gone = account(data, "delete", "carol")
    assert gone.returncode == 1
    assert "no such account: carol" in gone.stderr


@pytest.mark.parametrize(
    ("name", "stdin", "message"),
    [
        ("dave", "abc\n", "at least 6 characters"),
        ("dave", "", "no password given"),
        ("dave", "\n", "no password given"),
        ("9dave", "long-enough\n", "not starting with a digit"),
    ],
)
def test_account_create_refusals(tmp_path: Path, name: str, stdin: str, message: str) -> None:
    data = tmp_path / "data"
    result = account(data, "create", name, stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert account(data, "list").stdout == ""


def stamp_in_days(text: str) -> float:
    """Days from now to a ``YYYY-MM-DDTHH:MM:SSZ`` stamp."""
    when = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return (when - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400


def test_account_invite_list_and_uninvite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_toml(tmp_path / "c.toml", {"chat": {"registration": "invite"}})
    invited = account(data, "invite", "Bob", "--config", str(config))
    assert invited.returncode == 0, invited.stderr
    assert invited.stderr == ""
    prefix = "invited Bob to register once, until "
    assert invited.stdout.startswith(prefix)
    assert 6.99 < stamp_in_days(invited.stdout[len(prefix) :].strip()) <= 7
    assert account(data, "invite", "carol", "--days", "0.5").returncode == 0

    listed = account(data, "invites")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert [(row[0], row[2]) for row in rows] == [("Bob", "-"), ("carol", "-")]
    assert 0.49 < stamp_in_days(rows[1][1]) <= 0.5

    withdrawn = account(data, "uninvite", "BOB")
    assert (withdrawn.returncode, withdrawn.stdout) == (0, "withdrew the invitation of BOB\n")
    again = account(data, "uninvite", "bob")
    assert again.returncode == 1
    assert "no invitation for bob" in again.stderr
    assert [line.split("\t")[0] for line in account(data, "invites").stdout.splitlines()] == [
        "carol"
    ]


def test_account_invite_refusals_and_the_mode_note(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert account(data, "create", "dave", stdin="long-enough\n").returncode == 0
    for args, message in (
        (("dave",), "dave is already registered"),
        (("9dave",), "not starting with a digit"),
        (("erin", "--days", "0"), "an invitation lasts more than 0 and at most 3650 days"),
        (("erin", "--days", "soon"), "invalid float value"),
    ):
        result = account(data, "invite", *args)
        assert result.returncode in (1, 2), args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert account(data, "invites").stdout == ""
    # Registration is open by default: the invitation is kept, and the operator is told.
    noted = account(data, "invite", "erin")
    assert noted.returncode == 0
    assert "note: registration is 'open', not 'invite'" in noted.stderr


def test_password_is_never_an_argument(tmp_path: Path) -> None:
    result = account(tmp_path, "create", "erin", "hunter22")
    assert result.returncode == 2
    assert not (tmp_path / "chatserver.db").exists()


# -- the deploy files agree with the command line ----------------------------------------------


def test_systemd_unit_runs_a_valid_command() -> None:
    unit = (REPO / "deploy" / "chatserver.service").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    argv = directives["ExecStart"].split()
    assert argv[0].endswith("/chatserver")
    args = _parser().parse_args(argv[1:])
    assert (args.command, args.config, args.data_dir) == (
        "run",
        "/etc/chatserver/chatserver.toml",
        "/var/lib/chatserver",
    )
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "StateDirectory": "chatserver",
        "CapabilityBoundingSet": "",
        "KillSignal": "SIGTERM",
    }.items():
        assert directives.get(key) == value, key
    assert "@system-service" in unit
    assert "RestrictAddressFamilies=AF_INET AF_INET6" in unit


def test_containerfile_runs_a_valid_command() -> None:
    import json

    text = (REPO / "deploy" / "Containerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    (cmd,) = [line for line in text.splitlines() if line.startswith("CMD ")]
    argv = json.loads(cmd[len("CMD ") :])
    assert argv[0] == "chatserver"
    args = _parser().parse_args(argv[1:])
    assert (args.command, args.data_dir) == ("run", "/data")
    assert "EXPOSE 2323 6667 6697 5222 5223" in text
    assert "VOLUME /data" in text
    assert "USER chatserver" in text
    assert "HEALTHCHECK" in text and "2323" in text
