"""Hostile input against IRC (the real server, over sockets), with the bystanders chatting
beside it.  Registration is closed on this server (``[chat] registration = "closed"``):
the line module covers open registration and its throttle."""

from __future__ import annotations

import base64
import itertools
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scramp import ScramClient

from tests.hostile import fuzz
from tests.hostile.clients import (
    ATTACKER,
    FUZZ,
    GUESSER,
    GUESSER2,
    GUESSER3,
    REGISTRAR,
    VICTIM,
    Closed,
    IrcUser,
    RawClient,
    connect,
    irc_command,
)
from tests.hostile.harness import (
    Crowd,
    Env,
    Watcher,
    count,
    flood_until_quit,
    read_until,
    start_env,
    stop_env,
    wait_until,
)
from tests.hostile.tlsclose import assert_tls_peers_let_go
from tests.hostile.tlsstall import assert_tls_stall_dropped
from tests.transport.tlsclient import SilentTlsPeer

pytestmark = pytest.mark.usefixtures("guard")

PROTO = "irc"
SERVER = "test.chatserver"
GUESSED = "guessme"
GUESSED_PASSWORD = "right-password"
# [tags SP] [:source SP] command params, CRLF; the part after the tags at most 512 bytes.
IRC_LINE = re.compile(
    rb"^(@[^ \r\n\x00]+ )?(:[^ \r\n\x00]+ )?([A-Za-z]+|[0-9]{3})( [^\r\n\x00]*)?\r$"
)

CORPUS = [
    b"PRIVMSG #fuzzroom :hello world\r\n",
    b"NOTICE #fuzzroom :hi\r\n",
    b"PRIVMSG fzwatch :\x01ACTION waves\x01\r\n",
    b"JOIN #fuzzroom,#other,0 key1,key2\r\n",
    b"PART #fuzzroom :bye\r\n",
    b"MODE #fuzzroom +ntk-l+b key *!*@*\r\n",
    b"MODE fzwatch +iw\r\n",
    b"TOPIC #fuzzroom :new topic\r\n",
    b"KICK #fuzzroom fzwatch :bye\r\n",
    b"INVITE fzwatch #fuzzroom\r\n",
    b"NICK fzother\r\n",
    b"WHO #fuzzroom %tcuhnfar,42\r\n",
    b"WHOIS fzwatch fzwatch\r\n",
    b"WHOWAS fzwatch 10\r\n",
    b"LIST >1,<100\r\n",
    b"NAMES #fuzzroom\r\n",
    b"CAP LS 302\r\n",
    b"CAP REQ :message-tags server-time batch labeled-response echo-message\r\n",
    b"CAP END\r\n",
    b"@label=abc;+draft/reply=x;a\\sb=c\\\\ PRIVMSG #fuzzroom :tagged\r\n",
    b"@+typing=active TAGMSG #fuzzroom\r\n",
    b"@+draft/react=x;+draft/reply=abc TAGMSG fzwatch\r\n",
    b"REDACT #fuzzroom abc123 :spam\r\nREDACT fzwatch abc\r\n",
    b"METADATA * SET display-name :Fuzz\r\nMETADATA #fuzzroom GET avatar status\r\n",
    b"METADATA * SUB display-name avatar\r\nMETADATA fzwatch SYNC\r\nMETADATA * CLEAR\r\n",
    b"AUTHENTICATE PLAIN\r\nAUTHENTICATE AG5vYm9keQB3cm9uZw==\r\n",
    b"AUTHENTICATE *\r\n",
    b"CHATHISTORY LATEST #fuzzroom * 50\r\n",
    b"CHATHISTORY BEFORE #fuzzroom timestamp=2020-01-01T00:00:00.000Z 10\r\n",
    b"MONITOR + fzwatch,a,b,c\r\nMONITOR L\r\n",
    b"PRIVMSG NickServ :IDENTIFY nobody wrong\r\n",
    b"PRIVMSG ChanServ :REGISTER #fuzzroom\r\n",
    b"REGISTER * * password1\r\n",
    b"AWAY :gone\r\nAWAY\r\n",
    b"USERHOST fzwatch a b\r\nISON fzwatch x\r\n",
    b"LUSERS\r\nMOTD\r\nVERSION\r\nTIME\r\n",
    b"OPER admin wrong\r\n",
    b"USER a 0 * :real name\r\n",
    b"PASS secret\r\n",
    b"PING :x\r\nPONG :y\r\n",
    b"SETNAME :new name\r\n",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = start_env(
        tmp_path_factory.mktemp("irc"),
        PROTO,
        protocols=("line", "irc"),
        overrides={"chat": {"registration": "closed"}},
    )
    try:
        # Registration is closed: the account is made the operator's way, while it runs.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "chatserver",
                "account",
                "create",
                GUESSED,
                "--password-stdin",
                "--config",
                str(environment.server.config_path),
                "--data-dir",
                str(environment.server.data_dir),
            ],
            input=GUESSED_PASSWORD + "\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
    except Exception:
        stop_env(environment)
        raise
    environment.new_log()
    yield environment
    stop_env(environment)


def valid_line(line: str) -> bool:
    data = line.encode() + b"\r"
    return bool(IRC_LINE.match(data)) and len(body_of(data)) <= 512


def body_of(data: bytes) -> bytes:
    """The part of a line after its tags, with the CRLF counted (as the 512 limit is)."""
    if data.startswith(b"@"):
        data = data.partition(b" ")[2]
    return data + b"\n"


@pytest.fixture(scope="module")
def watcher(env: Env) -> Iterator[Watcher]:
    """A user in #fuzzroom: everything it is sent must be well-formed IRC in UTF-8."""
    user = IrcUser(env.ports[PROTO], "fzwatch", source=VICTIM)
    user.join("#fuzzroom")
    watch = Watcher(user, valid_line)
    yield watch
    watch.stop()


def check_output(data: bytes) -> None:
    """Every line the server sent is a well-formed IRC line of at most 512 bytes (after the
    tags), in UTF-8, and none says the server failed."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line in lines:
        assert IRC_LINE.match(line), f"not an IRC line: {line!r}"
        assert len(body_of(line[:-1])) <= 512, f"longer than 512 bytes: {line!r}"
        text = line.decode("utf-8")
        assert "Internal error" not in text, text


_nicks = itertools.count(1)
PROBE = b"\r\nPING :probe\r\n"


PONG = re.compile(rb" PONG \S+ :?probe\r\n")


def pong_seen(data: bytes) -> bool:
    return PONG.search(data) is not None


def run_case(port: int, payload: bytes, *, registered: bool) -> None:
    """One generated case on a fresh connection, before or after registration, then a
    PING whose PONG proves everything before it was handled."""
    client = RawClient(port, source=FUZZ, timeout=10.0)
    try:
        if registered:
            nick = f"fz{next(_nicks)}"
            client.send(f"NICK {nick}\r\nUSER {nick} 0 * :fuzz\r\nJOIN #fuzzroom\r\n".encode())
            client.expect(lambda line: " 366 " in line)
        client.buffer = b""
        client.send(payload + PROBE)
        data = read_until(client, pong_seen, f"no PONG after {payload!r}")
        check_output(data)
    except Closed:
        pass
    finally:
        client.close()


def few_lines(data: bytes) -> bool:
    # Lines past the flood burst are delayed, not lost; keeping cases short keeps CI quick.
    return data.count(b"\n") <= 12


CASE = st.tuples(
    st.one_of(fuzz.random_bytes(), fuzz.mutated(CORPUS)).filter(few_lines), st.booleans()
)
BATCH = 25


def test_generated_input(env: Env, watcher: Watcher, scale: int) -> None:
    """Random and mutated lines, before and after registration: well-formed answers only,
    nothing internal, and the watcher in the room sees only well-formed UTF-8 IRC."""
    port = env.ports[PROTO]

    @fuzz.batch_settings(160 * scale)
    @given(st.lists(CASE, min_size=BATCH, max_size=BATCH))
    def batches(cases: list[tuple[bytes, bool]]) -> None:
        for payload, registered in cases:
            run_case(port, payload, registered=registered)
        count(PROTO, len(cases))

    batches()
    watcher.check()


def test_overlong_lines(env: Env, watcher: Watcher) -> None:
    """417 for a line over 512 bytes and for client tags over 4094; the next line works."""
    user = IrcUser(env.ports[PROTO], "longline", source=ATTACKER)
    user.join("#fuzzroom")
    mark = watcher.mark()
    user.send(b"PRIVMSG #fuzzroom :" + b"x" * 600 + b"\r\n")
    assert user.expect(" 417 ") == f":{SERVER} 417 longline :Input line was too long"
    user.send(b"@+a=" + b"t" * 9000 + b" PRIVMSG #fuzzroom :tags\r\n")
    assert user.expect(" 417 ") == f":{SERVER} 417 longline :Input line was too long"
    # Exactly 512 with CRLF is allowed.
    head = b"PRIVMSG #fuzzroom :"
    user.send(head + b"y" * (510 - len(head)) + b"\r\n")
    user.sync()
    # Relayed with the sender's prefix it no longer fits one line: it arrives as one line,
    # cut (clients take each PRIVMSG for a message of its own).
    said = wait_said(watcher, "longline", "y" * 40, mark, ends=True)
    assert len(said) == 1
    assert said[0] == "y" * len(said[0]) and len(said[0]) < 510 - len(head)
    count(PROTO, 3)
    watcher.check()


def test_replies_fit_512(env: Env) -> None:
    """Replies that echo what the client sent (a 500-byte command, channel, nick, FAIL
    context) are cut to fit 512 bytes, not sent longer."""
    user = IrcUser(env.ports[PROTO], "echoed", source=ATTACKER, register=False)
    user.send(b"CAP REQ :standard-replies draft/chathistory\r\nNICK echoed\r\n")
    user.send(b"USER e 0 * :e\r\nCAP END\r\n")
    user.expect(" 001 ")
    user.buffer = b""
    user.send(b"X" * 509 + b"\r\n")
    user.send(b"JOIN #" + b"r" * 500 + b"\r\n")
    user.send(b"MODE " + b"n" * 500 + b"\r\n")
    user.send(b"A" * 400 + b" :caf\xc3\r\n")
    user.send(b"CHATHISTORY BEFORE #fuzzroom timestamp=" + b"t" * 440 + b" 10\r\n")
    user.send(b"CAP :message-tags batch\r\n")
    user.send(b"CAP REQ :" + b"nosuchcap " * 49 + b"\r\n")
    user.send(b"PING :end\r\n")
    data = b""
    while not data.endswith(b" end\r\n"):
        user.sock.settimeout(5)
        data += user.sock.recv(65536)
    lines = data.split(b"\r\n")[:-1]
    assert len(lines) == 8
    assert lines[-3] == b":test.chatserver 410 echoed message-tags :Invalid CAP command"
    assert lines[-2].startswith(b":test.chatserver CAP echoed NAK :nosuchcap nosuchcap")
    for line in lines:
        assert len(body_of(line)) <= 512, line
    check_output(data)
    count(PROTO, 7)


def test_endless_line(env: Env) -> None:
    """64 MiB without a newline: one 417 when it ends, nothing kept meanwhile."""
    user = IrcUser(env.ports[PROTO], "endless", source=ATTACKER)
    chunk = b"a" * (1 << 16)
    for _ in range(1024):
        user.send(chunk)
    user.send(b"\r\n")
    user.sync()
    assert sum(1 for line in user.seen if " 417 " in line) == 1
    count(PROTO)


def test_invalid_utf8_nul_and_bare_cr(env: Env, watcher: Watcher) -> None:
    user = IrcUser(env.ports[PROTO], "badbytes", source=ATTACKER, register=False)
    user.send(b"CAP REQ :standard-replies\r\nNICK badbytes\r\nUSER b 0 * :b\r\nCAP END\r\n")
    user.expect(" 001 ")
    user.join("#fuzzroom")
    mark = watcher.mark()
    user.send(b"PRIVMSG #fuzzroom :caf\xc3\r\n")
    assert user.expect("INVALID_UTF8") == (
        f":{SERVER} FAIL PRIVMSG INVALID_UTF8 :Message rejected, your IRC software MUST use"
        " UTF-8 encoding on this network"
    )
    user.send(b"PRIVMSG #fuzzroom :he\x00llo\r\n")
    assert user.expect(" 400 ") == (
        f":{SERVER} 400 badbytes PRIVMSG :Malformed line: NUL, CR or LF in the line"
    )
    user.send(b"PRIVMSG #fuzzroom :bare\rcr\r\n")
    assert user.expect(" 400 ") == (
        f":{SERVER} 400 badbytes PRIVMSG :Malformed line: NUL, CR or LF in the line"
    )
    user.send(b"PRIVMSG #fuzzroom :clean\r\n")
    user.sync()
    said = wait_said(watcher, "badbytes", "clean", mark)
    assert len(said) == 1, f"more than the clean line reached the room: {said}"
    count(PROTO, 3)
    watcher.check()


def wait_said(
    watcher: Watcher, nick: str, last: str, mark: int, *, ends: bool = False
) -> list[str]:
    """The texts ``nick`` said in #fuzzroom since ``mark``, once ``last`` is among them
    (or, with ``ends``, once one ends with it)."""

    def texts() -> list[str]:
        found = []
        for line in watcher.since(mark):
            command, params = irc_command(line)
            if line.startswith(f":{nick}!") and command == "PRIVMSG" and params[0] == "#fuzzroom":
                found.append(params[1])
        return found

    def done() -> bool:
        said = texts()
        return bool(said) and (said[-1].endswith(last) if ends else last in said)

    assert wait_until(done, 5), watcher.since(mark)[-5:]
    return texts()


def test_unknown_and_short_commands(env: Env) -> None:
    user = IrcUser(env.ports[PROTO], "confused", source=ATTACKER)
    user.send(b"FROBNICATE a b c\r\n")
    assert user.expect(" 421 ") == f":{SERVER} 421 confused FROBNICATE :Unknown command"
    user.send(b"PRIVMSG\r\n")
    assert user.expect(" 411 ") == f":{SERVER} 411 confused :No recipient given (PRIVMSG)"
    user.send(b"PRIVMSG #fuzzroom\r\n")
    assert user.expect(" 412 ") == f":{SERVER} 412 confused :No text to send"
    user.send(b"KICK #fuzzroom\r\n")
    assert user.expect(" 461 ") == f":{SERVER} 461 confused KICK :Not enough parameters"
    early = RawClient(env.ports[PROTO], source=ATTACKER)
    early.send(b"PRIVMSG #fuzzroom :hi\r\n")
    assert early.expect(" 451 ") == f":{SERVER} 451 * :You have not registered"
    count(PROTO, 5)


def test_flood_within_budget(env: Env, watcher: Watcher) -> None:
    """A burst the size of the budget passes at once, none delayed."""
    user = IrcUser(env.ports[PROTO], "polite", source=ATTACKER)
    user.join("#fuzzroom")
    time.sleep(1.0)  # registration and JOIN cost tokens; let the bucket fill again
    mark = watcher.mark()
    start = time.monotonic()
    user.send(b"".join(b"PRIVMSG #fuzzroom :burst %d\r\n" % i for i in range(19)))
    user.sync()
    took = time.monotonic() - start
    assert wait_said(watcher, "polite", "burst 18", mark) == [f"burst {i}" for i in range(19)]
    assert took < 0.5, f"a burst inside the budget was delayed ({took:.2f} s)"
    count(PROTO)
    watcher.check()


def test_flood_beyond_budget(env: Env, watcher: Watcher) -> None:
    """Past the budget lines are delayed (at the refill rate), none lost; a queue longer
    than flood_max_queue is an excess flood: ERROR, and the room sees the quit."""
    user = IrcUser(env.ports[PROTO], "hasty", source=ATTACKER)
    user.join("#fuzzroom")
    time.sleep(1.0)
    mark = watcher.mark()
    start = time.monotonic()
    user.send(b"".join(b"PRIVMSG #fuzzroom :hasty %d\r\n" % i for i in range(60)))
    user.sync("delayed")
    took = time.monotonic() - start
    assert wait_said(watcher, "hasty", "hasty 59", mark) == [f"hasty {i}" for i in range(60)]
    # 20 at once, then 25 a second: the last ones wait about 1.6 seconds.
    assert took > 1.2, f"60 lines were not delayed ({took:.2f} s)"
    flooder = IrcUser(env.ports[PROTO], "flooder", source=ATTACKER)
    flooder.join("#fuzzroom")
    mark = watcher.mark()
    flooder.send(b"".join(b"PRIVMSG #fuzzroom :flood %d\r\n" % i for i in range(200)))
    rest = flooder.read_until_closed(5)
    host = "[" + flooder_host(rest) + "]"
    assert rest[-1] == f"ERROR :Closing Link: flooder{host} (Excess Flood)"
    watcher.wait_for(quit_line(watcher, "flooder", mark), mark)
    count(PROTO, 2)
    watcher.check()


@pytest.mark.parametrize("command", ["CAP LS 302", "AUTHENTICATE PLAIN", "CAP REQ :sasl"])
def test_commands_before_registration_take_tokens(env: Env, command: str) -> None:
    """Hundreds of CAP or AUTHENTICATE lines at once, before registering: answered only as
    far as the flood budget goes, then closed for flooding (they once cost nothing, and a
    client could make the server answer 40,000 of them a second)."""
    client = RawClient(env.ports[PROTO], source=ATTACKER)
    try:
        client.send(f"{command}\r\n".encode() * 500)
    except OSError:
        pass  # closed while we were still sending
    lines = client.read_until_closed(10)
    assert lines and lines[-1].endswith("(Excess Flood)"), lines[-3:]
    assert len(lines) < 60, f"{len(lines)} answers to {command}"
    count(PROTO, 500)


def churn(port: int, channel: str, nick: str, seconds: float) -> int:
    """JOIN and PART ``channel`` as fast as the server takes them (each pair waits for the
    last PART to come back, so the client never floods): how many pairs in ``seconds``."""
    user = IrcUser(port, nick, source=ATTACKER, timeout=10.0)
    time.sleep(1.0)  # registration cost tokens; start with a full bucket
    pairs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        user.send(f"JOIN {channel}\r\nPART {channel}\r\n".encode())
        user.expect(lambda line: line.startswith(f":{nick}!") and f" PART {channel}" in line)
        pairs += 1
    user.close()
    return pairs


def test_join_part_churn_costs_by_the_size_of_the_room(env: Env) -> None:
    """A JOIN or PART costs its tokens and a hundredth of one per member who hears of it:
    churning in a room of 200 goes at half the pace of churning alone, and the bystanders
    do not notice either."""
    crowd = Crowd(env.ports["line"], "crowded", 200)
    try:
        big = churn(env.ports[PROTO], "#crowded", "churnbig", 3.0)
        small = churn(env.ports[PROTO], "#lonely", "churnsmall", 3.0)
    finally:
        crowd.close()
    env.notes.append(
        f"irc: JOIN/PART pairs in 3 s from one client: {small} alone, {big} in a room of 200"
    )
    # Alone a pair costs about 3 tokens; among 200, about 7.
    assert big < 0.7 * small, (big, small)
    count(PROTO, big + small)


def flooder_host(lines: list[str]) -> str:
    return lines[-1].split("[", 1)[1].split("]", 1)[0]


def quit_line(watcher: Watcher, nick: str, mark: int) -> str:
    assert wait_until(
        lambda: any(ln.startswith(f":{nick}!") and " QUIT " in ln for ln in watcher.since(mark)),
        5,
    ), watcher.since(mark)[-5:]
    line = next(ln for ln in watcher.since(mark) if ln.startswith(f":{nick}!") and " QUIT " in ln)
    assert line.endswith(" QUIT :Excess Flood"), line
    return line


def test_slowloris(env: Env) -> None:
    """One byte a second, never a whole line: the registration timeout ends it."""
    clients = [RawClient(env.ports[PROTO], source=ATTACKER) for _ in range(5)]
    start = time.monotonic()
    for _ in range(8):
        for client in clients:
            if not client.closed:
                try:
                    client.send(b"N")
                except OSError:
                    client.closed = True
        time.sleep(1.0)
        if all(client.closed or client_done(client) for client in clients):
            break
    took = time.monotonic() - start
    for client in clients:
        if not client.closed:
            client.read_until_closed(2)
        assert client.seen[-1] == "ERROR :Closing Link: *[127.0.0.1] (Registration timed out)"
    assert took < 6
    count(PROTO, len(clients))


def client_done(client: RawClient) -> bool:
    try:
        client.read_line(0.01)
    except TimeoutError:
        return False
    except (Closed, OSError):
        return True
    return "ERROR" in client.seen[-1]


def test_never_reads(env: Env) -> None:
    """A member that never reads while line-chat writers fill its channel: dropped for its
    SendQ (64 KiB in this config) once the kernel's buffers are full."""
    sloth = RawClient(env.ports[PROTO], source=VICTIM, rcvbuf=4096)
    sloth.send(b"NICK sloth\r\nUSER sloth 0 * :sloth\r\nJOIN #bigroom\r\n")
    sloth.expect(lambda line: " 366 " in line)
    quit_line_, took = flood_until_quit(
        env.ports["line"], "bigroom", "sloth", keepalive=lambda: sloth.send(b"PING :k\r\n")
    )
    assert quit_line_ == "-!- sloth quit (SendQ exceeded)"
    env.notes.append(f"irc: the reader that never reads was dropped after {took:.1f} s")
    count(PROTO)


def test_connection_flood(env: Env) -> None:
    port = env.ports[PROTO]
    time.sleep(0.3)
    held = [RawClient(port, source=ATTACKER) for _ in range(20)]
    for client in held:
        client.send(b"PING :held\r\n")
        client.expect("PONG")
    refused = RawClient(port, source=ATTACKER)
    lines = refused.read_until_closed(5)
    assert lines == [
        "ERROR :Closing Link: *[127.0.0.1] (too many connections from your address (limit 20))"
    ]
    other = IrcUser(port, "otheraddr", source=VICTIM)
    other.sync()
    for client in held:
        client.close()
    count(PROTO, 21)
    for i in range(300):
        sock = connect(port, source=ATTACKER)
        if i % 2:
            sock.sendall(b"NICK churn%d\r\n" % i)
        sock.close()
    count(PROTO, 300)
    assert wait_until(lambda: connectable(port), 5)


def connectable(port: int) -> bool:
    client = RawClient(port, source=ATTACKER)
    try:
        client.send(b"PING :again\r\n")
        client.expect("PONG", 1)
        return True
    except (Closed, TimeoutError, OSError):
        return False
    finally:
        client.close()


def test_registration_closed(env: Env) -> None:
    """Closed registration: every attempt, on every route, is refused, and no flood of them
    gets one through."""
    user = IrcUser(env.ports[PROTO], "wannabe", source=REGISTRAR, register=False)
    user.send(b"CAP REQ :draft/account-registration standard-replies\r\n")
    user.send(b"NICK wannabe\r\nUSER w 0 * :w\r\nCAP END\r\n")
    user.expect(" 001 ")
    for i in range(5):
        user.send(b"REGISTER * * password%d\r\n" % i)
        assert user.expect("REGISTER") == (
            f":{SERVER} FAIL REGISTER TEMPORARILY_UNAVAILABLE wannabe"
            " :registration is closed on this server"
        )
        user.send(b"PRIVMSG NickServ :REGISTER password%d\r\n" % i)
        assert user.expect("NickServ").endswith(
            " NOTICE wannabe :REGISTER failed: registration is closed on this server"
        )
    count(PROTO, 10)


def sasl_plain(port: int, password: str, source: str) -> str:
    """A SASL PLAIN attempt for the guessed account; the numeric it ends with."""
    client = RawClient(port, source=source)
    token = base64.b64encode(f"\0{GUESSED}\0{password}".encode()).decode()
    client.send(b"CAP REQ :sasl\r\nAUTHENTICATE PLAIN\r\n")
    client.expect("AUTHENTICATE +")
    client.send(f"AUTHENTICATE {token}\r\n".encode())
    line = client.expect(lambda ln: " 903 " in ln or " 904 " in ln)
    client.close()
    return irc_command(line)[0]


def test_password_guessing(env: Env) -> None:
    """SASL: five wrong passwords, then the right one fails too (904) from any address that
    never logged in to the account, while the one that did still gets in; NickServ says why."""
    port = env.ports[PROTO]
    assert sasl_plain(port, GUESSED_PASSWORD, GUESSER2) == "903"
    assert [sasl_plain(port, f"wrong{i}", GUESSER) for i in range(5)] == ["904"] * 5
    assert sasl_plain(port, GUESSED_PASSWORD, GUESSER) == "904"
    assert sasl_plain(port, GUESSED_PASSWORD, GUESSER3) == "904"
    assert sasl_plain(port, GUESSED_PASSWORD, GUESSER2) == "903"
    user = IrcUser(port, "asker", source=GUESSER3)
    user.send(f"PRIVMSG NickServ :IDENTIFY {GUESSED} {GUESSED_PASSWORD}\r\n".encode())
    assert user.expect("NickServ").endswith(
        " NOTICE asker :IDENTIFY failed: too many failed logins; wait a while before trying again"
    )
    count(PROTO, 10)


def test_operator_guessing_in_parallel(env: Env) -> None:
    """Twenty OPER attempts at once (each an scrypt check of ~16 MiB): answered, and run
    one at a time, so the server's memory does not jump by hundreds of MiB."""
    port = env.ports[PROTO]
    before = env.peak_kb()
    users = [IrcUser(port, f"oper{i}", source=f"127.0.1.{i + 1}") for i in range(20)]
    for user in users:
        user.send(b"OPER admin wrong-password\r\n")
    for i, user in enumerate(users):
        assert user.expect(" 464 ", 20) == f":{SERVER} 464 oper{i} :Password incorrect"
    grown = (env.peak_kb() - before) // 1024
    assert grown < 48, f"20 operator checks took the server up by {grown} MiB"
    count(PROTO, 20)


def test_tls_handshake_stall(env: Env) -> None:
    count(
        PROTO,
        assert_tls_stall_dropped(
            env.ports["irc_tls"], timeout=2.0, probe=(b"PING :t\r\n", b"PONG")
        ),
    )


def test_tls_peers_that_leave_the_end_to_the_server(env: Env) -> None:
    """Over TLS: QUIT and never answer the close; trickle a registration a byte at a time;
    trickle a TLS record.  The server lets go of each in time (registration deadline 3 s,
    then the close's bound)."""

    def login(peer: SilentTlsPeer, i: int) -> None:
        peer.send(f"NICK tlsq{i}\r\nUSER tlsq{i} 0 * :q\r\n".encode())
        peer.read_until(b" 001 ")

    count(
        PROTO,
        assert_tls_peers_let_go(
            env.ports["irc_tls"],
            login=login,
            end=b"QUIT\r\n",
            first=b"NICK slowpoke",
            bound=15.0,
            pid=env.pid,
        ),
    )


def test_abandoned_scram_exchanges_count(env: Env) -> None:
    """Twenty SCRAM exchanges started at once from twenty addresses and never finished:
    each counts when its client-first arrives, so only the account's budget of them gets a
    challenge; the owner, from the address it logged in from before, still gets in."""
    port = env.ports[PROTO]
    env.server.create_account("scramtarget", "scram-password")
    owner = "127.0.11.1"

    def start(source: str) -> RawClient:
        client = RawClient(port, source=source)
        client.send(b"CAP REQ :sasl\r\nAUTHENTICATE SCRAM-SHA-256\r\n")
        client.expect("AUTHENTICATE +")
        return client

    def first_answer(client: RawClient) -> str:
        line = client.expect(lambda ln: irc_command(ln)[0] in ("AUTHENTICATE", "904"))
        return irc_command(line)[0]

    def scram_login(source: str) -> str:
        client = start(source)
        scram = ScramClient(["SCRAM-SHA-256"], "scramtarget", "scram-password")
        client.send_line("AUTHENTICATE " + b64(scram.get_client_first()))
        command, params = irc_command(
            client.expect(lambda ln: irc_command(ln)[0] in ("AUTHENTICATE", "904"))
        )
        if command == "904":
            client.close()
            return command
        scram.set_server_first(base64.b64decode(params[0]).decode())
        client.send_line("AUTHENTICATE " + b64(scram.get_client_final()))
        client.expect(lambda ln: irc_command(ln)[0] == "AUTHENTICATE")
        client.send_line("AUTHENTICATE +")
        result = irc_command(client.expect(lambda ln: irc_command(ln)[0] in ("903", "904")))[0]
        client.close()
        return result

    assert scram_login(owner) == "903"
    clients = [start(f"127.0.12.{i + 1}") for i in range(20)]
    for i, client in enumerate(clients):
        first = ScramClient(["SCRAM-SHA-256"], "scramtarget", f"guess{i}").get_client_first()
        client.send_line("AUTHENTICATE " + b64(first))
    answers = [first_answer(client) for client in clients]
    assert 1 <= answers.count("AUTHENTICATE") <= 5, answers
    assert answers.count("904") == 20 - answers.count("AUTHENTICATE")
    for client in clients:
        client.close()  # never finished: each stays counted
    assert scram_login("127.0.12.99") == "904"
    assert scram_login(owner) == "903"
    count(PROTO, 23)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
