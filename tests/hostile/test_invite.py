"""Registration by invitation under attack (the real server with ``[chat] registration =
"invite"``, the bystanders chatting beside it): floods of uninvited names on every route are
refused without using up the address's registration tries, and many clients racing for one
invitation, over line chat and XMPP at once, create exactly one account."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.hostile.clients import REGISTRAR, IrcUser, LineUser, XmppClient, local
from tests.hostile.harness import Env, count, start_env, stop_env

pytestmark = pytest.mark.usefixtures("guard")

SERVER = "test.chatserver"
PASSWORD = "invited-password"
NOT_INVITED = "registration on this server is by invitation; ask an operator"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
# Racers come each from an address of their own, so that the per-address registration
# throttle (three) is not what stops them.
RACER_ADDRESSES = [f"127.0.0.{i}" for i in range(40, 52)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    environment = start_env(
        tmp_path_factory.mktemp("invite"),
        "line",
        protocols=("line", "irc", "xmpp"),
        # [xmpp] registration "" follows [chat] registration.
        overrides={"chat": {"registration": "invite"}, "xmpp": {"registration": ""}},
    )
    yield environment
    stop_env(environment)


def account_cli(env: Env, *args: str) -> str:
    """``chatserver account …`` on the running server's database; its output."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatserver",
            "account",
            *args,
            "--config",
            str(env.server.config_path),
            "--data-dir",
            str(env.server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def xmpp_error(answer: object) -> tuple[str, str | None]:
    """(condition, text) of an IQ error answer."""
    error = answer.find("{jabber:client}error")  # type: ignore[attr-defined]
    assert error is not None
    conditions = [local(child) for child in error if local(child) != "text"]
    return conditions[0], error.findtext(f"{{{NS_STANZAS}}}text")


def test_uninvited_flood_on_every_route(env: Env) -> None:
    """Six uninvited names per protocol from one address: all refused as uninvited, none
    throttled, no account made; then an invited name from the same address still gets in."""
    answers = []
    for i in range(6):
        user = LineUser(env.ports["line"], f"lineflood{i}", source=REGISTRAR)
        user.send_line(f"/register {PASSWORD}")
        answers.append(user.expect(lambda line: line.startswith(("!!! ", "*** "))))
        user.close()
    assert answers == [f"!!! error: {NOT_INVITED}"] * 6

    irc = IrcUser(env.ports["irc"], "ircflood", source=REGISTRAR, register=False)
    irc.send(b"CAP REQ :draft/account-registration\r\n")
    irc.send(b"NICK ircflood\r\nUSER i 0 * :i\r\nCAP END\r\n")
    irc.expect(" 001 ")
    for i in range(6):
        irc.send(b"REGISTER * * password%d\r\n" % i)
        assert irc.expect(" REGISTER ") == (
            f":{SERVER} FAIL REGISTER TEMPORARILY_UNAVAILABLE ircflood :{NOT_INVITED}"
        )
    irc.close()

    xmpp = XmppClient(env.ports["xmpp"], source=REGISTRAR)
    for i in range(6):
        answer = xmpp.register(f"xmppflood{i}", PASSWORD)
        assert answer.get("type") == "error"
        assert xmpp_error(answer) == ("not-allowed", NOT_INVITED)
    xmpp.close()
    assert account_cli(env, "list") == ""

    account_cli(env, "invite", "welcome")
    guest = XmppClient(env.ports["xmpp"], source=REGISTRAR)
    assert guest.register("welcome", PASSWORD).get("type") == "result"
    guest.close()
    assert account_cli(env, "invites") == ""
    count("line", 6)
    count("irc", 6)
    count("xmpp", 7)


def test_racing_for_one_invitation(env: Env) -> None:
    """Eleven XMPP registrations and one line /register of the invited name, all sent at
    once, each from its own address with its own password: one account, which only the
    winner's password opens."""
    account_cli(env, "invite", "prize")
    holder = LineUser(env.ports["line"], "prize", source=RACER_ADDRESSES[0])
    racers = [XmppClient(env.ports["xmpp"], source=address) for address in RACER_ADDRESSES[1:]]
    outcomes: dict[str, str] = {}
    start = threading.Barrier(len(racers) + 1)

    def race_xmpp(i: int, racer: XmppClient) -> None:
        start.wait()
        answer = racer.register("prize", f"{PASSWORD}-{i}")
        outcomes[f"{PASSWORD}-{i}"] = (
            "won" if answer.get("type") == "result" else xmpp_error(answer)[0]
        )

    def race_line() -> None:
        start.wait()
        holder.send_line(f"/register {PASSWORD}-line")
        line = holder.expect(lambda line: line.startswith("!!! ") or "is now registered" in line)
        outcomes[f"{PASSWORD}-line"] = "won" if "is now registered" in line else line

    threads = [threading.Thread(target=race_xmpp, args=(i, r)) for i, r in enumerate(racers)]
    threads.append(threading.Thread(target=race_line))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(outcomes) == len(racers) + 1, outcomes
    winners = [password for password, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1, outcomes
    losers = {outcome for outcome in outcomes.values() if outcome != "won"}
    assert losers <= {
        "conflict",
        "not-allowed",
        "!!! error: prize is already registered",
        f"!!! error: {NOT_INVITED}",
    }, outcomes
    assert "prize" in [line.split("\t")[0] for line in account_cli(env, "list").splitlines()]
    assert account_cli(env, "invites") == ""
    for racer in racers:
        racer.close()
    holder.close()
    # The winner first: a few wrong passwords more and the account would be throttled.
    tries = [winners[0], *[password for password in outcomes if password != winners[0]][:3]]
    for password in tries:
        client = XmppClient(env.ports["xmpp"], source=RACER_ADDRESSES[0])
        result = local(client.auth_plain("prize", password))
        client.close()
        assert result == ("success" if password == winners[0] else "failure"), password
    count("xmpp", len(racers) * 2)
    count("line", 2)
