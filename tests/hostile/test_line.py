"""Hostile input against line chat (the real server, over sockets), with the bystanders
chatting beside it.  The errors asserted are those of protocols/line/README.md."""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile import fuzz
from tests.hostile.clients import (
    ATTACKER,
    BYSTANDER,
    FUZZ,
    GUESSER,
    GUESSER2,
    LINE_PROMPT,
    REGISTRAR,
    VICTIM,
    Closed,
    LineUser,
    RawClient,
    connect,
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

PROTO = "line"
MAX_LINE = 16384
TOO_LONG = f"!!! error: line too long (the limit is {MAX_LINE} bytes); it was dropped"
FLOOD_WARNING = (
    "!!! error: you are sending too fast: lines are dropped until you slow down"
    " (warning {n} of 3; the next one closes the connection)"
)
PING_TIMEOUT = "-!- Server closing connection: Ping timeout: no answer in 2 seconds"
# A line the server writes in text mode starts with one of the documented prefixes.
TEXT_LINE = re.compile(
    r"^(\[[@+]?#[a-z0-9._-]+\] |\*[^* ]+\* |\* \S+ |-[^ ]+- |-> |-!- |\*\*\* |!!! )"
)
# What the server may answer to telnet negotiation: a refusal, three bytes.
IAC_REFUSAL = re.compile(rb"\xff[\xfc\xfe][\x00-\xff]")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # TAB is kept, as documented

CORPUS = [
    b"/join fuzzroom\r\n",
    b"hello world\r\n",
    b"/me waves\r\n",
    b"/msg fzwatch hi there\r\n",
    b"/topic #fuzzroom new topic\r\n",
    b"/mode fuzzroom +m-t+k sesame\r\n",
    b"/mode fuzzroom +limit 5 +ban *!*@*\r\n",
    b"/nick fzother\r\n",
    b"/format json\r\n",
    b'{"cmd": "say", "room": "fuzzroom", "text": "hi"}\r\n',
    b'{"cmd":"join","room":"a,b,c","key":"x","tag":[1,{"a":null}]}\n',
    b'{"cmd":"history","room":"fuzzroom","count":1e308}\n',
    b"/history fuzzroom 50\r\n",
    b"/whois fzwatch\r\n",
    b"/who fuzzroom\r\n",
    b"/rooms\r\n",
    b"/help join\r\n",
    b"/away gone fishing\r\n",
    b"/ban fuzzroom *!*@*\r\n",
    b"/kick fuzzroom fzwatch bye\r\n",
    b"//etc is a directory\r\n",
    b"\xff\xfd\x18\xff\xfb\x01hello\r\n",
    b"\xff\xfa\x18\x00xterm\xff\xf0/ping\r\n",
    b"/identify nobody wrong-password\r\n",
    b"/invite fzwatch fuzzroom\r\n",
    b"/op fuzzroom fzwatch\r\n",
    b"/notice #fuzzroom hi\r\n",
    b"/say #fuzzroom caf\xc3\xa9 \xe2\x98\x83\r\n",
    b"/part fuzzroom bye\r\n",
    b"/join a,b,c,d,e,f,g,h\r\n",
    b"/history\r\n",
    b"/format text\r\n",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = start_env(
        tmp_path_factory.mktemp("line"),
        PROTO,
        protocols=("line",),
    )
    yield environment
    stop_env(environment)


@pytest.fixture(scope="module")
def watcher(env: Env) -> Iterator[Watcher]:
    """A user in #fuzzroom who checks every line that attackers make it see."""
    user = LineUser(env.ports[PROTO], "fzwatch", source=VICTIM)
    user.join("fuzzroom")
    watch = Watcher(user, valid_watcher_line)
    yield watch
    watch.stop()


def said_by(watcher: Watcher, nick: str, mark: int) -> list[str]:
    """What ``nick`` said in #fuzzroom since ``mark`` (other users may come and go)."""
    return [ln for ln in watcher.since(mark) if ln.startswith(f"[#fuzzroom] <{nick}> ")]


def valid_watcher_line(line: str) -> bool:
    """Every line a room member sees is documented text without control characters (text
    from users is shown without them; TAB is kept)."""
    return bool(TEXT_LINE.match(line)) and not CONTROL.search(line)


_nicks = itertools.count(1)


def check_output(data: bytes) -> list[str]:
    """Split what the server sent into lines and check each: documented text or JSON."""
    data = IAC_REFUSAL.sub(b"", data)
    assert b"\xff" not in data, f"a stray IAC in the output: {data[-200:]!r}"
    lines = data.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        if line.startswith("{"):
            obj = json.loads(line)
            assert isinstance(obj, dict) and "type" in obj, line
            assert obj.get("error") != "internal", line
        else:
            assert line.endswith("\r"), f"not CRLF: {line!r}"
            assert TEXT_LINE.match(line), f"undocumented line: {line!r}"
            assert "internal error" not in line, line
    return lines


# After a case: end whatever telnet command the payload left open (a subnegotiation would
# swallow the rest), end the line, and ask for a pong.  Two IAC SE cover every state the
# payload can leave the telnet parser in.
PROBE = b"\xff\xf0\xff\xf0\r\n/ping\r\n"


def pong_seen(data: bytes) -> bool:
    return b"*** pong\r\n" in data or b'{"type":"ok","cmd":"ping"}\n' in data


def run_case(port: int, payload: bytes, *, with_nick: bool) -> None:
    """One generated case on a fresh connection: the payload, then /ping, whose answer
    proves everything before it was handled.  Closing is allowed (the payload may say
    /quit); anything but documented output is not."""
    client = RawClient(port, source=FUZZ, timeout=10.0)
    try:
        client.expect(LINE_PROMPT)
        if with_nick:
            nick = f"fz{next(_nicks)}"
            client.send(f"{nick}\r\n/join fuzzroom\r\n".encode())
            client.expect("*** now talking in #fuzzroom")
        client.buffer = b""
        client.send(payload + PROBE)
        data = read_until(client, pong_seen, f"no pong after {payload!r}")
        check_output(data)
    except Closed:
        pass
    finally:
        client.close()


def run_batch(env: Env, payloads: list[tuple[bytes, bool]]) -> None:
    port = env.ports[PROTO]
    for payload, with_nick in payloads:
        run_case(port, payload, with_nick=with_nick)
    count(PROTO, len(payloads))


# Newlines past the flood burst would get the /ping dropped: keep each case within it.
def few_lines(data: bytes) -> bool:
    return data.count(b"\n") <= 12


CASE = st.tuples(
    st.one_of(fuzz.random_bytes(), fuzz.mutated(CORPUS)).filter(few_lines), st.booleans()
)
BATCH = 25


def test_generated_input(env: Env, watcher: Watcher, scale: int) -> None:
    """Random and mutated bytes: every answer documented, nothing internal, watcher clean."""

    @fuzz.batch_settings(160 * scale)
    @given(st.lists(CASE, min_size=BATCH, max_size=BATCH))
    def batches(payloads: list[tuple[bytes, bool]]) -> None:
        run_batch(env, payloads)

    batches()
    watcher.check()


def test_overlong_line(env: Env, watcher: Watcher) -> None:
    user = LineUser(env.ports[PROTO], "longline", source=ATTACKER)
    user.join("fuzzroom")
    user.send(b"x" * (MAX_LINE + 1) + b"\r\n")
    assert user.read_line() == TOO_LONG
    mark = watcher.mark()
    user.send(b"y" * MAX_LINE + b"\r\n")
    user.sync()
    assert user.seen.count(TOO_LONG) == 1
    watcher.wait_for("[#fuzzroom] <longline> " + "y" * MAX_LINE, mark)
    user.close()
    count(PROTO, 2)
    watcher.check()


def test_endless_line(env: Env) -> None:
    """64 MiB without a newline: one error, nothing kept, the connection still usable."""
    user = LineUser(env.ports[PROTO], "endless", source=ATTACKER)
    chunk = bytes(random.Random(1).choice(b"abcdefgh") for _ in range(1 << 16))
    for _ in range(1024):
        user.send(chunk)
    user.send(b"\r\n")
    user.sync()
    assert user.seen.count(TOO_LONG) == 1
    user.close()
    count(PROTO)


def test_invalid_utf8_nul_and_bare_cr(env: Env, watcher: Watcher) -> None:
    """Invalid UTF-8 becomes U+FFFD; NUL and bare CR are dropped; the room sees clean text."""
    user = LineUser(env.ports[PROTO], "badbytes", source=ATTACKER)
    mark = watcher.mark()
    user.join("fuzzroom")
    watcher.wait_for("-!- badbytes joined #fuzzroom", mark)
    mark = watcher.mark()
    payloads = [b"caf\xc3 \xfe\xfd ok", b"he\x00llo\rwor\x00ld", b"\xed\xa0\x80\xc0\xaf!"]
    for payload in payloads:
        user.send(payload + b"\r\n")
    user.sync()
    assert wait_until(lambda: len(said_by(watcher, "badbytes", mark)) >= 3, 5)
    assert said_by(watcher, "badbytes", mark) == [
        "[#fuzzroom] <badbytes> caf\ufffd \ufffd\ufffd ok",
        "[#fuzzroom] <badbytes> helloworld",
        "[#fuzzroom] <badbytes> " + "\ufffd" * 5 + "!",
    ]
    user.close()
    count(PROTO, 3)
    watcher.check()


def telnet_storm(rng: random.Random, size: int, *, commands: bool = False) -> bytes:
    """Telnet commands of every kind, well formed, and no data byte among them: ``size``
    bytes of them, or ``size`` commands."""
    parts = []
    total = 0
    while total < size:
        kind = rng.randrange(4)
        if kind == 0:
            piece = bytes((255, rng.choice((251, 252, 253, 254)), rng.randrange(256)))
        elif kind == 1:
            body = bytes(rng.choice(range(0, 255)) for _ in range(rng.randrange(40)))
            piece = b"\xff\xfa" + body + b"\xff\xf0"
        elif kind == 2:
            piece = bytes((255, rng.choice((241, 242, 243, 244, 245, 246, 247, 248, 249))))
        else:
            piece = b"\xff\xfa\x18\xff\xff\x01\xff\xf0"
        parts.append(piece)
        total += 1 if commands else len(piece)
    return b"".join(parts)


def test_telnet_commands_around_a_line(env: Env, watcher: Watcher) -> None:
    """A telnet client's usual handful of commands around one line: refusals only, at most
    one per option, and the room sees the line and nothing else."""
    rng = random.Random(7)
    user = RawClient(env.ports[PROTO], source=ATTACKER)
    user.expect(LINE_PROMPT)
    mark = watcher.mark()
    user.send(b"iacfew\r\n/join fuzzroom\r\n")
    user.expect("*** now talking in #fuzzroom")
    watcher.wait_for("-!- iacfew joined #fuzzroom", mark)
    time.sleep(1.0)  # the nick and the join used tokens; let the bucket fill again
    mark = watcher.mark()
    # Whole commands on either side of the text, so that no byte of it is an option code.
    before, after = telnet_storm(rng, 4, commands=True), telnet_storm(rng, 4, commands=True)
    user.send(before + b"vis" + after + b"ible\r\n")
    user.send(b"/ping\r\n")
    data = b""
    while b"*** pong\r\n" not in data:
        user.sock.settimeout(5)
        data += user.sock.recv(65536)
    refusals = IAC_REFUSAL.findall(data)
    assert len(refusals) == len(set(refusals))
    # Besides the refusals only the pong, and events of the room (users of earlier tests
    # may still be leaving it).
    text = IAC_REFUSAL.sub(b"", data).decode()
    assert [ln for ln in text.split("\r\n") if not ln.startswith("-!- ")] == ["*** pong", ""]
    watcher.wait_for("[#fuzzroom] <iacfew> visible", mark)
    assert said_by(watcher, "iacfew", mark) == ["[#fuzzroom] <iacfew> visible"]
    user.close()
    count(PROTO)
    watcher.check()


@pytest.mark.parametrize("kind", ["mixed", "nop", "negotiation", "subnegotiation"])
def test_telnet_iac_storm_is_a_flood(env: Env, watcher: Watcher, kind: str) -> None:
    """Telnet commands cost like lines: a storm of them (each kind, and all mixed) around a
    line ends the connection for flooding at once; the room never sees the line, and what
    was answered before the end is at most one refusal per option."""
    rng = random.Random(11)
    user = RawClient(env.ports[PROTO], source=ATTACKER)
    user.expect(LINE_PROMPT)
    mark = watcher.mark()
    nick = f"storm{kind[:3]}"
    user.send(f"{nick}\r\n/join fuzzroom\r\n".encode())
    user.expect("*** now talking in #fuzzroom")
    watcher.wait_for(f"-!- {nick} joined #fuzzroom", mark)
    mark = watcher.mark()
    storm = {
        "mixed": lambda: telnet_storm(rng, 128 * 1024),
        "nop": lambda: b"\xff\xf1" * (64 * 1024),
        "negotiation": lambda: b"".join(bytes((255, 253, i % 256)) for i in range(40_000)),
        "subnegotiation": lambda: b"\xff\xfa\x18\x00\xff\xf0" * 20_000,
    }[kind]()
    start = time.monotonic()
    try:
        user.send(storm + b"invisible\r\n" + storm)
    except OSError:
        pass  # closed while the storm was still being sent
    data = user.read_bytes_until_closed(timeout=5.0)
    took = time.monotonic() - start
    assert b"Server closing connection: Excess flood" in data
    assert took < 3.0, f"the storm went on for {took:.1f} s"
    refusals = IAC_REFUSAL.findall(data)
    assert len(refusals) == len(set(refusals))
    watcher.wait_for(f"-!- {nick} quit (Excess flood)", mark)
    assert said_by(watcher, nick, mark) == []
    count(PROTO)
    watcher.check()


def test_telnet_nop_drip(env: Env, watcher: Watcher) -> None:
    """A client that sends nothing but telnet NOPs, a few at a time above the line rate,
    never idle and never saying a line: flood control ends it within seconds."""
    user = LineUser(env.ports[PROTO], "dripper", source=ATTACKER)
    start = time.monotonic()
    closed = False
    while time.monotonic() - start < 8.0:
        try:
            user.send(b"\xff\xf1" * 8)
        except OSError:
            closed = True
            break
        if user.drain(0.1) and user.closed:
            closed = True
            break
    assert closed, "a drip of telnet commands past the budget was never stopped"
    count(PROTO)
    watcher.check()


def test_flood_within_budget(env: Env, watcher: Watcher) -> None:
    user = LineUser(env.ports[PROTO], "polite", source=ATTACKER)
    mark = watcher.mark()
    user.join("fuzzroom")
    watcher.wait_for("-!- polite joined #fuzzroom", mark)
    time.sleep(1.0)  # the nick and the join used tokens; let the bucket fill again
    mark = watcher.mark()
    # The whole burst at once: 19 lines and the /ping of sync().
    user.send(b"".join(b"burst %d\r\n" % i for i in range(19)))
    user.sync()
    watcher.wait_for("[#fuzzroom] <polite> burst 18", mark)
    expected = [f"[#fuzzroom] <polite> burst {i}" for i in range(19)]
    assert said_by(watcher, "polite", mark) == expected
    assert not any("sending too fast" in line for line in user.seen)
    user.close()
    count(PROTO)
    watcher.check()


def test_flood_beyond_budget(env: Env, watcher: Watcher) -> None:
    """Past the budget lines are dropped with a warning (three), then the connection is
    closed for excess flood."""
    user = LineUser(env.ports[PROTO], "flooder", source=ATTACKER)
    mark = watcher.mark()
    user.join("fuzzroom")
    watcher.wait_for("-!- flooder joined #fuzzroom", mark)
    time.sleep(1.0)
    mark = watcher.mark()
    flood = b"".join(b"flood %d\r\n" % i for i in range(100))
    for n in (1, 2, 3):
        user.send(flood)
        assert user.expect("sending too fast") == FLOOD_WARNING.format(n=n)
        time.sleep(0.2)  # a few tokens back, not a full bucket: the warnings stay
    user.send(flood)
    rest = user.read_until_closed(5)
    assert rest[-1] == "-!- Server closing connection: Excess flood"
    # The burst of 20, then a few per pause: never the whole flood.
    watcher.wait_for("-!- flooder quit (Excess flood)", mark)
    assert 20 < len(said_by(watcher, "flooder", mark)) < 60
    user.close()
    count(PROTO)
    watcher.check()


def test_slowloris(env: Env) -> None:
    """One byte a second and never a newline: the idle probe, then the ping timeout."""
    clients = [RawClient(env.ports[PROTO], source=ATTACKER) for _ in range(5)]
    for client in clients:
        client.expect(LINE_PROMPT)
    start = time.monotonic()
    open_clients = list(clients)
    while open_clients and time.monotonic() - start < 9:
        for client in list(open_clients):
            try:
                client.send(b"a")
                client.read_line(0.01)
            except TimeoutError:
                pass
            except (Closed, OSError):
                open_clients.remove(client)
        time.sleep(1.0)
    took = time.monotonic() - start
    for client in clients:
        if not client.closed:
            client.read_until_closed(1)
        assert "-!- ping: are you there? (any line answers)" in client.seen
        assert client.seen[-1] == PING_TIMEOUT
        client.close()
    # idle_timeout 3 + ping_timeout 2, and the pace of the loop.
    assert took < 8
    count(PROTO, len(clients))


def test_never_reads(env: Env) -> None:
    """A member that never reads while others fill its room with 16 KiB lines: dropped for
    its output backlog, while the writers (who read) and the server carry on."""
    port = env.ports[PROTO]
    sloth = socket_user(port, "sloth", rcvbuf=4096)
    quit_line, took = flood_until_quit(
        port, "bigroom", "sloth", keepalive=lambda: sloth.send(b"\r\n")
    )
    assert quit_line == "-!- sloth quit (Output backlog full)"
    sloth.close()
    env.notes.append(f"line: the reader that never reads was dropped after {took:.1f} s")
    count(PROTO)


def socket_user(port: int, nick: str, *, rcvbuf: int) -> RawClient:
    """A line user in #bigroom with a tiny receive buffer, who will stop reading."""
    client = RawClient(port, source=VICTIM, rcvbuf=rcvbuf)
    client.expect(LINE_PROMPT)
    client.send(f"{nick}\r\n/join bigroom\r\n".encode())
    client.expect("*** now talking in #bigroom")
    return client


def test_connection_flood(env: Env) -> None:
    """20 connections from one address, then a refusal; other addresses still connect;
    hundreds of connect-and-close leave no descriptor behind."""
    port = env.ports[PROTO]
    # Connections of earlier tests are closed; give the server a moment to see it.
    time.sleep(0.3)
    fds_before = count_fds(env)
    held = [RawClient(port, source=ATTACKER) for _ in range(20)]
    for client in held:
        client.expect(LINE_PROMPT)
    refused = RawClient(port, source=ATTACKER)
    lines = refused.read_until_closed(5)
    assert lines == ["!!! error: too many connections from your address (limit 20)"]
    other = LineUser(port, "otheraddr", source=VICTIM)
    other.sync()
    other.close()
    for client in held:
        client.close()
    count(PROTO, 22)
    # Churn: connect, close at once (sometimes before the greeting), over and over.
    for i in range(300):
        sock = connect(port, source=ATTACKER)
        if i % 2:
            sock.recv(10)
        sock.close()
    count(PROTO, 300)
    assert wait_until(lambda: count_fds(env) <= fds_before + 2, 10), (
        f"descriptors: {fds_before} before, {count_fds(env)} after"
    )
    again = LineUser(port, "afterflood", source=ATTACKER)
    again.close()
    # The exempt address ([chat] address_limit_exempt, a gateway) is not capped.
    many = [RawClient(port, source=BYSTANDER) for _ in range(25)]
    for client in many:
        client.expect(LINE_PROMPT)
        client.close()
    count(PROTO, 25)


def count_fds(env: Env) -> int:
    return len(list(Path(f"/proc/{env.pid}/fd").iterdir()))


def test_registration_flood(env: Env) -> None:
    """Three new accounts from one address, then a refusal with the throttled error."""
    port = env.ports[PROTO]
    answers = []
    for i in range(6):
        user = LineUser(port, f"newacct{i}", source=REGISTRAR)
        user.send_line("/register secret-password")
        answers.append(
            user.expect(lambda line: "is now registered" in line or line.startswith("!!!"))
        )
        user.close()
    assert answers[:3] == [f"*** newacct{i} is now registered" for i in range(3)]
    assert (
        answers[3:] == ["!!! error: too many new accounts from your address; try again later"] * 3
    )
    count(PROTO, 6)


def test_password_guessing(env: Env) -> None:
    """Five wrong passwords for an account, then even the right one is refused, from any
    address; twenty failures from one address block it for every account."""
    port = env.ports[PROTO]
    owner = LineUser(port, "guessme", source=VICTIM)
    owner.send_line("/register right-password")
    owner.expect("*** guessme is now registered")
    owner.close()
    guesser = LineUser(port, "guesser", source=GUESSER)
    answers = []
    for i in range(5):
        time.sleep(0.05)  # inside the flood budget: every guess gets its answer
        guesser.send_line(f"/identify guessme wrong{i}")
        answers.append(guesser.expect(lambda line: line.startswith("!!!")))
    assert answers == ["!!! error: invalid password (/identify <nick> <password>)"] * 5 or all(
        a.startswith("!!! error: invalid password") for a in answers
    )
    throttled = "!!! error: too many failed logins; wait a while before trying again"
    guesser.send_line("/identify guessme right-password")
    assert guesser.expect(lambda line: line.startswith("!!!")) == throttled
    elsewhere = LineUser(port, "elsewhere", source=GUESSER2)
    elsewhere.send_line("/identify guessme right-password")
    assert elsewhere.expect(lambda line: line.startswith("!!!")) == throttled
    elsewhere.close()
    # Per address: many accounts, one address.
    for i in range(20):
        time.sleep(0.05)
        guesser.send_line(f"/identify nosuch{i} whatever")
        guesser.expect(lambda line: line.startswith("!!!"))
    guesser.send_line("/identify otheraccount whatever")
    assert guesser.expect(lambda line: line.startswith("!!!")) == throttled
    guesser.close()
    count(PROTO, 28)


def test_posing_as_an_account_or_a_service(env: Env, watcher: Watcher) -> None:
    """Every spelling of a registered nick, a service's name or a guest nick is refused, at
    the prompt and by renaming; a logged-in user cannot rename itself to another account."""
    port = env.ports[PROTO]
    owner = LineUser(port, "realowner", source=VICTIM)
    owner.send_line("/register right-password")
    owner.expect("*** realowner is now registered")
    owner.close()
    spellings = ["realowner", "REALOWNER", "RealOwner", "NickServ", "NICKSERV", "chanServ"]
    spellings += ["operserv", "Guest1", "GUEST00042", "guest12345"]
    poser = RawClient(port)
    poser.expect(LINE_PROMPT)
    for nick in spellings:
        time.sleep(0.1)  # inside the flood budget: every try gets its answer
        poser.send_line(nick)
        refusal = poser.expect(lambda line: line.startswith("!!!"))
        assert refusal.startswith(f"!!! error: {nick} is "), refusal
        assert "reserved" in refusal or "registered nick" in refusal, refusal
    poser.send_line("poser")
    poser.expect("*** You are poser.")
    poser.send_line("/register poser-password")
    poser.expect("*** poser is now registered")
    for nick in spellings:
        time.sleep(0.1)
        poser.send_line(f"/nick {nick}")
        refusal = poser.expect(lambda line: line.startswith("!!!"))
        assert refusal.startswith(f"!!! error: {nick} is "), refusal
    poser.send_line("/whois poser")
    assert poser.expect(lambda line: line.startswith("*** poser is ")).startswith(
        "*** poser is poser!"
    )
    poser.close()
    watcher.check()
    count(PROTO, 2 * len(spellings))


def test_tls_handshake_stall(env: Env) -> None:
    count(PROTO, assert_tls_stall_dropped(env.ports["line_tls"], timeout=2.0, probe=(b"", b"***")))


def test_tls_peers_that_leave_the_end_to_the_server(env: Env) -> None:
    """Over TLS: /quit and never answer the close; trickle a line that never ends; trickle a
    TLS record.  The server lets go of each in time (idle 3 s and ping 2 s, then the close's
    bound)."""

    def login(peer: SilentTlsPeer, i: int) -> None:
        peer.read_until(b"Choose a nick")
        peer.send(f"tlsq{i}\r\n".encode())
        peer.read_until(b"You are")

    count(
        PROTO,
        assert_tls_peers_let_go(
            env.ports["line_tls"],
            login=login,
            end=b"/quit\r\n",
            first=b"a line that never ends ",
            bound=18.0,
            pid=env.pid,
        ),
    )


# -- text outside the rule, through JSON -----------------------------------------------------

# Characters JSON can spell and no other protocol can carry, among ones that are fine.
TEXT_CHARS = st.sampled_from(
    ["a", " ", "\U0001f600", "\x02", "\t", "\n", "\u2028", "\ud800", "\udbff", "\udc00", "\x00"]
)
TEXTS = st.lists(TEXT_CHARS, max_size=6).map("".join)
TAGS = st.recursive(
    st.none() | st.integers() | st.floats() | TEXTS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXTS, inner, max_size=3),
    max_leaves=12,
)
JSON_COMMANDS = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(["say", "me", "notice", "msg", "topic", "away", "ping", "part"]),
        "room": st.just("fuzzroom"),
        "to": st.just("fzwatch"),
        "text": TEXTS,
        "tag": TAGS,
    }
)


def breaks_rule(value: Any) -> bool:
    """Whether ``value`` holds a string with a surrogate or NUL (the server's text rule)."""
    if isinstance(value, str):
        return any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, list):
        return any(breaks_rule(v) for v in value)
    if isinstance(value, dict):
        return any(breaks_rule(k) or breaks_rule(v) for k, v in value.items())
    return False


def strict_json(line: str) -> dict[str, Any]:
    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in an answer: {line!r}")

    obj = json.loads(line, parse_constant=refuse)
    assert isinstance(obj, dict), line
    return obj


def test_json_text_outside_the_rule(env: Env, watcher: Watcher, scale: int) -> None:
    """Generated JSON commands whose strings and tags hold surrogates, NUL, controls,
    non-finite numbers: every answer is one strict JSON object, nothing that breaks the rule
    is accepted, and the room's other member sees only clean text."""
    user = LineUser(env.ports[PROTO], "jsonfz", source=ATTACKER)
    user.join("fuzzroom")
    user.send_line("/format json")
    user.expect(lambda line: line.startswith("{"))
    cases = 0

    @fuzz.batch_settings(100 * scale)
    @given(JSON_COMMANDS)
    def one(obj: dict[str, Any]) -> None:
        nonlocal cases
        time.sleep(0.05)  # inside the flood budget: this is not about flooding
        line = json.dumps(obj)
        user.send_line(line)
        answer = strict_json(user.expect(lambda line: '"type":"ok"' in line or '"error"' in line))
        cases += 1
        # What the server decodes: two halves side by side in the line are one character.
        sent = json.loads(line)
        finite = "NaN" not in line and "Infinity" not in line
        if breaks_rule(sent) or not finite:
            assert answer["type"] == "error", (obj, answer)
            assert answer["error"] in ("bad_text", "bad_json"), (obj, answer)
        if "tag" in answer:
            assert answer["tag"] == sent["tag"], (obj, answer)
        if obj["cmd"] == "part" and answer["type"] == "ok":
            user.send_line('{"cmd": "join", "room": "fuzzroom"}')
            user.expect(lambda line: '"cmd":"join"' in line)

    one()
    user.send_line('{"cmd": "ping", "tag": "end"}')
    assert strict_json(user.expect(lambda line: '"tag":"end"' in line))["type"] == "ok"
    user.close()
    count(PROTO, cases)
    watcher.check()


# -- login guesses in flight -----------------------------------------------------------------


def test_guesses_in_flight_from_many_addresses(env: Env) -> None:
    """Thirty /identify guesses at once, each from its own address: only the account's
    budget of them is checked; meanwhile its owner, from the address that registered it,
    logs in with the right password."""
    port = env.ports[PROTO]
    owner_address = "127.0.9.1"
    owner = LineUser(port, "inflight", source=owner_address)
    owner.send_line("/register inflight-password")
    owner.expect("*** inflight is now registered")
    owner.close()
    guessers = [LineUser(port, f"inf{i}", source=f"127.0.10.{i + 1}") for i in range(30)]
    for i, guesser in enumerate(guessers):
        guesser.send_line(f"/identify inflight wrong{i}")
    answers = [g.expect(lambda line: line.startswith("!!!")) for g in guessers]
    for guesser in guessers:
        guesser.close()
    checked = [a for a in answers if a.startswith("!!! error: invalid password")]
    throttled = [a for a in answers if "too many failed logins" in a]
    assert 1 <= len(checked) <= 5 and len(checked) + len(throttled) == 30, answers
    again = LineUser(port, "inflight2", source=owner_address)
    again.send_line("/identify inflight inflight-password")
    again.expect("you are now logged in as inflight")
    again.close()
    count(PROTO, 32)


def test_a_crowd_joining_one_room_costs_little(env: Env) -> None:
    """500 users join one room as fast as they can: each member hears of the joins of a
    reactor turn in one write, and the server's CPU per join stays small (each used to cost
    a render and a write for every member already there), while the bystanders chat on."""
    used = env.cpu()
    crowd = Crowd(env.ports[PROTO], "stadium", 500)
    per_join = (env.cpu() - used) / 500
    crowd.close()
    env.notes.append(f"line: 500 users joining one room cost {per_join * 1000:.2f} ms of CPU each")
    assert per_join < 0.002
    count(PROTO, 500)
