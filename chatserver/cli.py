"""The ``chatserver`` command: run the server, check a config, make a certificate, manage
accounts, control the running server.

Exit status: 0 done, 1 the operation failed, 2 bad usage or a bad configuration.
``admin`` commands, and the account commands whose effects must be live (create, passwd,
delete, list), ask the running server through its control socket; with no server running,
account commands open the SQLite file themselves (it is in WAL mode, so the invitation
commands can use it beside a running server).  Passwords are read from stdin or prompted
for, never taken as arguments, since arguments are visible to every user of the machine.

Each command imports the parts of the server it uses, inside the command: ``check-config``
then stays quick, and works on a machine where only the configuration matters.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from chatserver.config import Config, ConfigError, load_config
from chatserver.core.errors import StorageUnavailable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

CONFIG_ENV = "CHATSERVER_CONFIG"


class CliError(Exception):
    """A failure to report on stderr; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatserver",
        description="A chat server where IRC, XMPP and line (telnet) clients share rooms.",
    )
    parser.add_argument("--version", action="version", version=f"chatserver {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"TOML configuration file (default: ${CONFIG_ENV}, else built-in defaults)",
    )
    common.add_argument(
        "--data-dir", metavar="DIR", help="directory for the database and certificates"
    )

    run = commands.add_parser("run", parents=[common], help="run the server")
    run.add_argument("--log-format", choices=("text", "json"), help="overrides [server] log_format")
    run.set_defaults(handler=_cmd_run)

    check = commands.add_parser("check-config", help="check a configuration file")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(handler=_cmd_check_config)

    cert = commands.add_parser(
        "gen-cert", parents=[common], help="make the self-signed TLS certificate in the data dir"
    )
    cert.add_argument("--force", action="store_true", help="replace an existing one")
    cert.set_defaults(handler=_cmd_gen_cert)

    account = commands.add_parser("account", help="manage accounts (registered nicks)")
    actions = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    password_help = "read the password from stdin (the default when stdin is not a terminal)"
    create = actions.add_parser("create", parents=[common], help="create an account")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--password-stdin", action="store_true", help=password_help)
    passwd = actions.add_parser("passwd", parents=[common], help="set an account's password")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--password-stdin", action="store_true", help=password_help)
    delete = actions.add_parser("delete", parents=[common], help="delete an account")
    delete.add_argument("name", metavar="NAME")
    actions.add_parser("list", parents=[common], help="list accounts")
    invite = actions.add_parser(
        "invite",
        parents=[common],
        help="let NAME be registered once, by whoever asks first (registration by invitation)",
    )
    invite.add_argument("name", metavar="NAME")
    invite.add_argument(
        "--days",
        type=float,
        default=7.0,
        metavar="N",
        help="the invitation expires after N days (default 7)",
    )
    uninvite = actions.add_parser(
        "uninvite", parents=[common], help="withdraw the invitation to register NAME"
    )
    uninvite.add_argument("name", metavar="NAME")
    actions.add_parser("invites", parents=[common], help="list the unexpired invitations")
    account.set_defaults(handler=_cmd_account)

    history = commands.add_parser("history", help="manage stored message history")
    history_actions = history.add_subparsers(dest="action", required=True, metavar="ACTION")
    purge = history_actions.add_parser(
        "purge",
        parents=[common],
        help="delete stored messages: of a room, of an account's private conversations,"
        " or everything older than a date",
    )
    purge.add_argument("--room", metavar="ROOM", help="this room's messages")
    purge.add_argument("--account", metavar="NAME", help="this account's private messages")
    purge.add_argument(
        "--before",
        metavar="DATE",
        help="only messages older than DATE (YYYY-MM-DD or an ISO 8601 time, UTC)",
    )
    history.set_defaults(handler=_cmd_history)

    backup = commands.add_parser(
        "backup",
        parents=[common],
        help="copy the database to FILE (safe while the server runs)",
    )
    backup.add_argument("file", metavar="FILE")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.set_defaults(handler=_cmd_backup)

    restore = commands.add_parser(
        "restore",
        parents=[common],
        help="replace the database with a backup (the server must be stopped)",
    )
    restore.add_argument("file", metavar="FILE")
    restore.set_defaults(handler=_cmd_restore)

    health = commands.add_parser(
        "health",
        parents=[common],
        help="check that the server on this machine answers (exit 0) or not (exit 1)",
    )
    health.add_argument(
        "--timeout", type=float, default=3.0, metavar="SECONDS", help="give up after (default 3)"
    )
    health.set_defaults(handler=_cmd_health)

    storage = commands.add_parser("storage", help="move the database between backends")
    storage_actions = storage.add_subparsers(dest="action", required=True, metavar="ACTION")
    copy = storage_actions.add_parser(
        "copy",
        help="copy an SQLite database into a PostgreSQL database, verified by counts",
        description="Copy every account, room, ban, roster, PEP item and message of an SQLite"
        " database into a PostgreSQL database (its tables are made if missing), in one"
        " transaction, then compare the rows of every table on both sides. Stop the server"
        " first, or messages stored meanwhile stay behind.",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="SQLITE_FILE")
    copy.add_argument("--to", dest="dsn", required=True, metavar="DSN")
    copy.add_argument(
        "--force", action="store_true", help="replace the content of a non-empty target"
    )
    storage.set_defaults(handler=_cmd_storage_copy)

    _admin_parser(commands, common)

    hashpw = commands.add_parser(
        "hash-password", help="hash an operator password for the [[operators]] config list"
    )
    hashpw.add_argument("--password-stdin", action="store_true", help=password_help)
    hashpw.set_defaults(handler=_cmd_hash_password)
    return parser


ADMIN_DESCRIPTION = """\
Control the server running on this machine through its control socket,
<data_dir>/control.sock (mode 0600: only the server's user may use it).
Every action is logged by the server. The socket speaks JSON lines, one request
object in, one answer object out, for scripts: {"cmd": "who"} -> {"ok": true, ...}.

examples:
  chatserver admin who --protocol irc
  chatserver admin kick dev bob "off topic"
  chatserver admin kill bob flooding
  chatserver admin kline '*!*@203.0.113.0/24' spam
  chatserver admin notice "restarting in 5 minutes"
  chatserver admin purge dev
  chatserver admin reload
"""


def _admin_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    admin = commands.add_parser(
        "admin",
        help="control the running server: who, rooms, kick, kill, kline, notice, purge, reload",
        description=ADMIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print the server's JSON answer")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common, output], help=help, description=help)

    who = action("who", "who is online: protocol, nick, account, address, cloak, rooms, since")
    who.add_argument("--protocol", choices=("line", "irc", "xmpp"), help="only this protocol")
    action("rooms", "the rooms: members, modes, topic")
    kick = action("kick", "remove NICK from ROOM")
    kick.add_argument("room", metavar="ROOM")
    kick.add_argument("nick", metavar="NICK")
    kick.add_argument("reason", metavar="REASON", nargs="*")
    kill = action("kill", "disconnect NICK (every connection)")
    kill.add_argument("nick", metavar="NICK")
    kill.add_argument("reason", metavar="REASON", nargs="*")
    kline = action("kline", "ban MASK from the server (disconnects who it matches)")
    kline.add_argument(
        "mask", metavar="MASK", help="nick!ident@host, an address or network, $a:account"
    )
    kline.add_argument("reason", metavar="REASON", nargs="*")
    unkline = action("unkline", "lift the server ban on MASK")
    unkline.add_argument("mask", metavar="MASK")
    action("klines", "list the server bans")
    notice = action("notice", "send a server notice to everyone online")
    notice.add_argument("text", metavar="TEXT", nargs="+")
    purge = action("purge", "delete the history of ROOM")
    purge.add_argument("room", metavar="ROOM")
    action("reload", "read the configuration file again (as SIGHUP does)")
    admin.set_defaults(handler=_cmd_admin)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chatserver")
    except PackageNotFoundError:
        # Run from a checkout that was never installed.
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except CliError as err:
        _report(args, f"chatserver: {err}", str(err))
        return err.status
    except ConfigError as err:
        _report(args, str(err), str(err))
        return EXIT_USAGE
    except StorageUnavailable as err:
        message = f"the database failed: {err.error or err}"
        _report(args, f"chatserver: {message}", message)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


def _report(args: argparse.Namespace, text: str, message: str) -> None:
    """An error that stops the command, on stderr: as text, or as one JSON log line when the
    server's log is JSON (a log shipper must not choke on the one line saying why it stopped)."""
    if _log_format(args) != "json":
        print(text, file=sys.stderr)
        return
    import time

    from twisted.logger import LogLevel

    from chatserver.server.logs import json_line

    event = {
        "log_time": time.time(),
        "log_level": LogLevel.critical,
        "log_namespace": "chatserver.cli",
        "log_format": "{error}",
        "error": message,
    }
    sys.stderr.write(json_line(event))


def _log_format(args: argparse.Namespace) -> str:
    """``--log-format``, else ``[server] log_format`` if the file says so (read on its own:
    the error may be that the rest of the file is wrong), else text."""
    if args.command != "run":
        return "text"
    if args.log_format:
        return str(args.log_format)
    import tomllib

    try:
        with open(args.config, "rb") as fp:
            fmt = tomllib.load(fp).get("server", {}).get("log_format")
    except (OSError, TypeError, ValueError, AttributeError):
        return "text"
    return fmt if fmt in ("text", "json") else "text"


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, data_dir_override=args.data_dir)


# -- run ---------------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    from chatserver.server.reactor import install as install_reactor

    install_reactor()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner

    from chatserver.server.app import build_service
    from chatserver.server.collector import freeze_startup_heap
    from chatserver.server.logs import log_observer

    fmt = args.log_format or config.server.log_format
    globalLogBeginner.beginLoggingTo(
        [log_observer(fmt, config.server.log_level, sys.stderr, reactor)],
        redirectStandardIO=False,
    )
    from protocols import connlog

    # The level is fixed until a restart: below debug, connections' debug lines are not made.
    connlog.debug_lines = config.server.log_level == "debug"
    from chatserver.server.reload import install_sighup

    server = build_service(config, reactor=reactor)
    reactor.callWhenRunning(_handle_stop_signals, reactor)
    reactor.callWhenRunning(install_sighup, reactor, server)
    reactor.callWhenRunning(server.startService)
    server.when_ready().addCallbacks(lambda _: freeze_startup_heap(), lambda _: None)
    # The reactor waits for the Deferred of a "before" trigger: users are told and history is
    # written before the reactor drops the connections.
    reactor.addSystemEventTrigger("before", "shutdown", server.stopService)
    reactor.run()
    return server.exit_status


def _handle_stop_signals(reactor: Any) -> None:
    """SIGTERM and SIGINT stop the reactor once; a repeat is noted, not an error.

    Replaces the reactor's own handlers, which would log a traceback for the second signal
    (systemd and impatient operators both send more than one).
    """
    from twisted.internet.error import ReactorNotRunning
    from twisted.logger import Logger

    log = Logger(namespace="chatserver.cli")
    stopping = False

    def stop(name: str) -> None:
        nonlocal stopping
        if stopping:
            log.info("received {signal}; already shutting down", signal=name)
            return
        stopping = True
        log.info("received {signal}, shutting down", signal=name)
        try:
            reactor.stop()
        except ReactorNotRunning:
            # A failed start stops the reactor by itself.
            pass

    def received(signum: int, _frame: object) -> None:
        # Only hand over to the reactor: logging here could re-enter a write in progress.
        reactor.callFromThread(stop, signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, received)


# -- check-config ------------------------------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if config.tls.certificate:
        from pathlib import Path

        from chatserver.server.tls import TlsError, load_options

        try:
            load_options(Path(config.tls.certificate), Path(config.tls.key))
        except TlsError as err:
            raise CliError(f"{args.file}: [tls]: {err}", EXIT_USAGE) from None
    print("ok")
    return EXIT_OK


# -- gen-cert ----------------------------------------------------------------------------------


def _cmd_gen_cert(args: argparse.Namespace) -> int:
    from chatserver.server.tls import ensure_self_signed, self_signed_names

    config = _config(args)
    try:
        cert, key, made = ensure_self_signed(
            config.data_dir, self_signed_names(config), force=args.force
        )
    except OSError as err:
        raise CliError(f"cannot write the certificate: {err}") from None
    print(f"{'made' if made else 'kept the existing'} {cert} and {key}")
    if config.tls.certificate:
        print(
            f"note: {config.source} sets [tls] certificate, so the server uses that instead",
            file=sys.stderr,
        )
    return EXIT_OK


# -- moving between backends ---------------------------------------------------------------


def _cmd_storage_copy(args: argparse.Namespace) -> int:
    from pathlib import Path

    source = Path(args.source)
    if not source.is_file():
        raise CliError(f"no such file: {source}")
    try:
        from chatserver.storage.copy import CopyError, copy_sqlite_to_postgresql
        from chatserver.storage.postgresql import PostgresStore, describe_dsn
    except ImportError as err:
        raise CliError(
            f"the postgresql backend needs psycopg: pip install 'psycopg[binary]' ({err})"
        ) from None
    from chatserver.storage.sqlite import SqliteStore

    target = describe_dsn(args.dsn)

    async def job(reactor: Any) -> int:
        from twisted.internet.threads import deferToThread

        # Opening brings both schemas to the current version, so their tables match.
        for store in (
            SqliteStore(str(source), reactor=reactor),
            PostgresStore(args.dsn, reactor=reactor),
        ):
            try:
                await store.open(check=True)
            except Exception as err:
                raise CliError(str(err)) from None
            finally:
                await store.close()
        print(f"copying {source} to {target}:")
        try:
            counts = await deferToThread(
                copy_sqlite_to_postgresql, str(source), args.dsn, force=args.force
            )
        except CopyError as err:
            raise CliError(str(err)) from None
        print(f"copied {sum(counts.values())} rows; every table holds as many rows as in {source}")
        return EXIT_OK

    return _run_reactor_once(job)


# -- backup and restore ------------------------------------------------------------------------


def _sqlite_only(config: Config, command: str, tool: str) -> None:
    if config.storage.backend != "sqlite":
        raise CliError(
            f"{command} works on the sqlite backend; with {config.storage.backend}, use {tool}"
        )


def _cmd_backup(args: argparse.Namespace) -> int:
    from pathlib import Path

    config = _config(args)
    _sqlite_only(config, "backup", "pg_dump")
    source = Path(config.storage.path)
    if not source.is_file():
        raise CliError(f"no database at {source}")
    dest = Path(args.file)
    # A backup never replaces a file by accident (perhaps the previous good backup), and never
    # makes directories: a mistyped path is an error, not a new tree.
    if dest.is_dir():
        raise CliError(f"{dest} is a directory: name the file to write")
    if dest.exists() and not args.force:
        raise CliError(f"{dest} exists: use --force to replace it")
    if not dest.absolute().parent.is_dir():
        raise CliError(f"no such directory: {dest.absolute().parent} (make it first)")

    async def job(reactor: Any) -> int:
        from chatserver.server.app import open_store

        store = open_store(config, reactor)
        try:
            await store.open()
            # One read transaction copies every page: the copy is consistent even while the
            # server writes, which it may go on doing meanwhile (WAL).
            await store.backup(dest)
        except ValueError as err:
            raise CliError(str(err)) from None
        finally:
            await store.close()
        return EXIT_OK

    _run_reactor_once(job)
    verdict = _check_database(dest)
    if verdict != "ok":
        raise CliError(f"the copy {dest} fails SQLite's integrity check: {verdict}")
    print(f"backed up {source} to {dest} ({dest.stat().st_size} bytes, integrity ok)")
    return EXIT_OK


def _check_database(path: Any) -> str:
    """SQLite's integrity verdict on ``path`` ("ok" or the problems), opened read-only."""
    import sqlite3
    from pathlib import Path

    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as err:
        return str(err)
    try:
        rows = db.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(row[0]) for row in rows)
    except sqlite3.Error as err:
        return str(err)
    finally:
        db.close()


def _schema_version(path: Any) -> int:
    import sqlite3
    from pathlib import Path

    db = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _cmd_restore(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from chatserver.server.pidfile import AlreadyRunning, PidFile, running_pid
    from chatserver.storage.migrations import SCHEMA_VERSION

    config = _config(args)
    _sqlite_only(config, "restore", "pg_restore")
    backup = Path(args.file)
    target = Path(config.storage.path)
    pid = running_pid(config.data_dir)
    if pid is not None:
        raise CliError(
            f"a chatserver ({f'pid {pid}' if pid else 'pid unknown'}) is running on"
            f" {config.data_dir}: stop it first, then restore"
        )
    if not backup.is_file():
        raise CliError(f"no such file: {backup}")
    verdict = _check_database(backup)
    if verdict != "ok":
        raise CliError(f"{backup} is not a usable database: {verdict}")
    version = _schema_version(backup)
    if version > SCHEMA_VERSION:
        raise CliError(
            f"{backup} has schema version {version}, newer than this chatserver's"
            f" ({SCHEMA_VERSION}): restore it with the chatserver that made it"
        )
    try:
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = PidFile(config.data_dir)
        # Held until the copy is in place: a server started meanwhile refuses to start.
        lock.acquire()
    except AlreadyRunning as err:
        raise CliError(f"{err}: stop it first, then restore") from None
    except OSError as err:
        raise CliError(f"cannot lock {config.data_dir}: {err}") from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = target.with_name(f"{target.name}.before-restore-{stamp}")
        kept: Path | None = None
        # The old database and its WAL move together: a WAL left beside the restored file
        # would be replayed into it.
        for suffix in ("", "-wal", "-shm"):
            old = Path(f"{target}{suffix}")
            if old.exists():
                os.replace(old, f"{aside}{suffix}")
                kept = aside
        tmp = target.with_name(f".{target.name}.restore-{os.getpid()}")
        shutil.copyfile(backup, tmp)
        with open(tmp, "rb") as fp:
            os.fsync(fp.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except OSError as err:
        raise CliError(f"cannot restore: {err}") from None
    finally:
        lock.release()
    print(f"restored {backup} to {target}")
    if kept is not None:
        print(f"the previous database is kept as {kept}")
    return EXIT_OK


# -- health ------------------------------------------------------------------------------------


def _local_host(host: str) -> str:
    """Where to reach a server that listens on ``host`` from this machine."""
    import ipaddress

    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return host


def _cmd_health(args: argparse.Namespace) -> int:
    """The container's health check: GET /health when [metrics] is on, else a TCP connect to
    the first listener (which proves less: the process listens, not that its store answers)."""
    import socket
    import urllib.error
    import urllib.request

    from chatserver.config import PROTOCOL_SECTIONS, bind_points, format_address

    config = _config(args)
    if config.metrics.enabled:
        address = format_address(_local_host(config.metrics.listen), config.metrics.port)
        url = f"http://{address}/health"
        try:
            with urllib.request.urlopen(url, timeout=args.timeout) as response:
                body = response.read().decode("utf-8", "replace").strip()
        except urllib.error.HTTPError as err:
            reason = err.read().decode("utf-8", "replace").strip()
            raise CliError(f"unhealthy ({err.code}): {reason}") from None
        except (OSError, ValueError) as err:
            raise CliError(f"no answer from {url}: {err}") from None
        print(body)
        return EXIT_OK
    for name in PROTOCOL_SECTIONS:
        section = getattr(config, name)
        if not section.enabled:
            continue
        for point in bind_points(section):
            host = _local_host(point.host)
            try:
                socket.create_connection((host, point.port), timeout=args.timeout).close()
            except OSError as err:
                raise CliError(
                    f"cannot connect to {name} at {format_address(host, point.port)}: {err}"
                ) from None
            print(f"{name} listens at {format_address(host, point.port)}")
            return EXIT_OK
    raise CliError("no protocol is enabled: nothing to check")


# -- admin -------------------------------------------------------------------------------------


def _admin_request(args: argparse.Namespace) -> dict[str, Any]:
    action = args.action
    request: dict[str, Any] = {"cmd": action}
    if action == "who" and args.protocol:
        request["protocol"] = args.protocol
    elif action == "kick":
        request.update(room=args.room.lstrip("#"), nick=args.nick, reason=" ".join(args.reason))
    elif action == "kill":
        request.update(nick=args.nick, reason=" ".join(args.reason))
    elif action == "kline":
        request.update(mask=args.mask, reason=" ".join(args.reason))
    elif action == "unkline":
        request["mask"] = args.mask
    elif action == "notice":
        request["text"] = " ".join(args.text)
    elif action == "purge":
        request["room"] = args.room.lstrip("#")
    return request


def _ask_server(config: Config, request: dict[str, Any]) -> dict[str, Any]:
    """The running server's answer; raises NotRunning when none answers."""
    from chatserver.server.control.client import ControlClient, ControlError, NotRunning

    try:
        with ControlClient(config.data_dir) as client:
            return client.ask(request)
    except NotRunning:
        raise
    except ControlError as err:
        raise CliError(str(err)) from None


def _cmd_admin(args: argparse.Namespace) -> int:
    import json

    from chatserver.server.control.client import NotRunning

    config = _config(args)
    try:
        answer = _ask_server(config, _admin_request(args))
    except NotRunning as err:
        raise CliError(str(err)) from None
    if args.json:
        print(json.dumps(answer, ensure_ascii=False, indent=2))
        return EXIT_OK
    _print_answer(args.action, answer)
    return EXIT_OK


def _table(rows: list[list[str]]) -> None:
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _print_answer(action: str, answer: dict[str, Any]) -> None:
    if action == "who":
        rows = [["PROTOCOL", "NICK", "ACCOUNT", "ADDRESS", "CLOAK", "SINCE", "ROOMS"]]
        for s in answer["sessions"]:
            rows.append(
                [
                    s["protocol"],
                    s["nick"] or "*",
                    s["account"] or "-",
                    s["address"],
                    s["cloak"],
                    s["since"],
                    ",".join(s["rooms"]) or "-",
                ]
            )
        _table(rows)
    elif action == "rooms":
        rows = [["ROOM", "MEMBERS", "MODES", "TOPIC"]]
        for r in answer["rooms"]:
            name = r["name"] + (" (registered)" if r["registered"] else "")
            rows.append([name, str(r["members"]), ",".join(r["modes"]) or "-", r["topic"]])
        _table(rows)
    elif action == "klines":
        for ban in answer["klines"]:
            print(f"{ban['mask']}\t{ban['set_by'] or '-'}\t{ban['set_at']}\t{ban['reason']}")
    elif action == "kick":
        print(f"kicked {answer['kicked']}")
    elif action == "kill":
        print(f"killed {answer['killed']}")
    elif action == "kline":
        gone = " ".join(answer["disconnected"])
        print(f"banned {answer['mask']}" + (f"; disconnected: {gone}" if gone else ""))
    elif action == "unkline":
        print(f"lifted the ban on {answer['mask']}")
    elif action == "notice":
        print(f"sent to {answer['reached']} connections")
    elif action == "purge":
        print(f"deleted {answer['deleted']} stored messages")
    elif action == "reload":
        print("reloaded; changed: " + (", ".join(answer["changed"]) or "nothing"))
        for key in answer["refused"]:
            print(f"not changed (needs a restart): {key}")


# -- hash-password -----------------------------------------------------------------------------


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from chatserver.passwords import hash_password

    print(hash_password(_read_password(args)))
    return EXIT_OK


# -- account -----------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise CliError("the passwords do not match")
    if not password:
        raise CliError("no password given")
    return password


# Account commands that go through the running server when there is one, so that their
# effects are live (a deleted account's sessions end at once).
_LIVE_ACCOUNT_ACTIONS = ("create", "passwd", "delete", "list")


def _cmd_account(args: argparse.Namespace) -> int:
    config = _config(args)
    password = _read_password(args) if args.action in ("create", "passwd") else ""
    if args.action in _LIVE_ACCOUNT_ACTIONS:
        from chatserver.server.control.client import NotRunning

        request: dict[str, Any] = {"cmd": f"account-{args.action}"}
        if args.action != "list":
            request["name"] = args.name
        if password:
            request["password"] = password
        try:
            answer = _ask_server(config, request)
        except NotRunning:
            pass
        else:
            _print_account(args.action, args.name if args.action != "list" else "", answer)
            return EXIT_OK

    async def job(reactor: Any) -> int:
        return await _account_job(
            reactor,
            config,
            args.action,
            getattr(args, "name", ""),
            password,
            days=getattr(args, "days", 0.0),
        )

    return _run_reactor_once(job)


def _print_account(action: str, name: str, answer: dict[str, Any]) -> None:
    if action == "create":
        print(f"created account {answer['name']}")
    elif action == "passwd":
        print(f"changed the password of {name}")
    elif action == "delete":
        print(f"deleted account {name}")
    elif action == "list":
        for record in answer["accounts"]:
            print(f"{record['name']}\t{record['created']}")


def _utc_stamp(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _account_job(
    reactor: Any, config: Config, action: str, name: str, password: str, *, days: float = 0.0
) -> int:
    from twisted.internet.threads import deferToThread

    from chatserver.core.accounts import AccountManager
    from chatserver.core.errors import ChatError
    from chatserver.server.app import open_store

    try:
        # The same private directory the server makes, should this command run first.
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot make the data directory: {err}") from None
    store = open_store(config, reactor)
    try:
        await store.open()
        accounts = AccountManager(store, config.chat, clock=reactor, run_in_thread=deferToThread)
        if action == "create":
            record = await accounts.create(name, password)
            print(f"created account {record.name}")
        elif action == "passwd":
            await accounts.set_password(name, password)
            print(f"changed the password of {name}")
        elif action == "delete":
            if not await accounts.delete(name):
                raise CliError(f"no such account: {name}")
            print(f"deleted account {name}")
        elif action == "list":
            for record in await accounts.list():
                print(f"{record.name}\t{_utc_stamp(record.created_at)}")
        elif action == "invite":
            invite = await accounts.invite(name, days)
            print(f"invited {invite.name} to register once, until {_utc_stamp(invite.expires_at)}")
            modes = {config.chat.registration, config.xmpp.registration or config.chat.registration}
            if "invite" not in modes:
                print(
                    f"note: registration is {config.chat.registration!r}, not 'invite', so the"
                    " invitation counts only once [chat] registration is 'invite'",
                    file=sys.stderr,
                )
        elif action == "uninvite":
            if not await accounts.uninvite(name):
                raise CliError(f"no invitation for {name}")
            print(f"withdrew the invitation of {name}")
        elif action == "invites":
            for invite in await accounts.invites():
                print(f"{invite.name}\t{_utc_stamp(invite.expires_at)}\t{invite.invited_by or '-'}")
    except ChatError as err:
        raise CliError(str(err)) from None
    finally:
        await store.close()
    return EXIT_OK


def _parse_date(text: str) -> float:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"--before: not a date: {text!r} (use YYYY-MM-DD)", EXIT_USAGE) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _cmd_history(args: argparse.Namespace) -> int:
    config = _config(args)
    if not (args.room or args.account or args.before):
        raise CliError("say what to purge: --room, --account and/or --before", EXIT_USAGE)
    before = _parse_date(args.before) if args.before else None

    async def job(reactor: Any) -> int:
        from chatserver.core.names import casefold, room_key
        from chatserver.server.app import open_store

        store = open_store(config, reactor)
        try:
            await store.open()
            deleted = 0
            if args.room:
                key = room_key(args.room.lstrip("#"))
                if before is None:
                    deleted += await store.purge(key)
                else:
                    deleted += await store.purge_room_before(key, before)
            if args.account:
                deleted += await store.purge_private(casefold(args.account), before)
            if before is not None and not args.room and not args.account:
                for table in ("history", "private_history"):
                    while True:
                        n = await store.expire(table, before, 2000)
                        deleted += n
                        if n < 2000:
                            break
            print(f"deleted {deleted} messages")
        finally:
            await store.close()
        return EXIT_OK

    return _run_reactor_once(job)


def _run_reactor_once(job: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``job(reactor)`` to completion on the reactor and return its exit status."""
    from twisted.internet import defer, reactor
    from twisted.logger import globalLogBeginner

    from chatserver.server.logs import log_observer

    # Only problems: the store's and the reactor's informational lines are noise here.
    globalLogBeginner.beginLoggingTo(
        [log_observer("text", "warn", sys.stderr)], redirectStandardIO=False
    )
    outcome: list[Any] = []

    def go() -> None:
        d: defer.Deferred[int] = defer.ensureDeferred(job(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(go)
    reactor.run()
    if not outcome:
        raise CliError("interrupted")
    result = outcome[0]
    if isinstance(result, int):
        return result
    error = result.value
    if isinstance(error, CliError):
        raise error
    raise CliError(f"{type(error).__name__}: {error}")
