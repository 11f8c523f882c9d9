from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chatserver.core.errors import (
    AccountError,
    AlreadyOnRoom,
    BadName,
    CannotSend,
    ChatError,
    JoinRefused,
    LimitExceeded,
    NickInUse,
    NickReserved,
    NoSuchNick,
    NoSuchRoom,
    NotOnRoom,
    NotPermitted,
    StorageUnavailable,
    UnknownMode,
)
from chatserver.core.events import (
    AccountChange,
    Away,
    Invite,
    Join,
    Kick,
    Message,
    ModeChange,
    ModeItem,
    NickChange,
    Quit,
    ServerNotice,
    Topic,
)
from chatserver.core.identity import NICK_CHECK_REST
from chatserver.core.interfaces import IClusterLink
from chatserver.core.records import AccountRecord
from chatserver.core.service import ChatService
from chatserver.core.settings import CoreSettings
from tests.core.fakes import FakeClient
from tests.support.memstore import MemoryStore, make_service


def result(d: Deferred) -> Any:
    """The result of an already-fired Deferred (raises its failure)."""
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


@pytest.fixture
def service() -> ChatService:
    return make_service()


def user(service: ChatService, nick: str, **kw: Any) -> tuple[FakeClient, Any]:
    client = FakeClient(**kw)
    conn = service.connect(client)
    service.claim_nick(conn, nick)
    return client, conn


@implementer(IClusterLink)
class _OtherNodes:
    """Cluster mode as the core sees it, with no other node saying anything: enough for
    what the core does differently when accounts may be made elsewhere."""

    def check_claim(self, nick: str) -> None:
        pass

    def check_join(self, room: str) -> None:
        pass

    def claim_account(self, account: str) -> Deferred:
        return succeed(None)

    def open_relay(self, node: str, state: object, end: object) -> None:
        return None

    def local_event(self, event: object) -> None:
        pass

    def publish_message(self, msg: object, nodes: object) -> None:
        pass

    def room_changed(self, room: str, by: object) -> None:
        pass

    def server_ban_changed(self, ban: object, lifted: bool) -> None:
        pass

    def account_changed(self, name: str, revoked: object) -> None:
        pass


def in_cluster(service: ChatService) -> ChatService:
    link = _OtherNodes()
    verifyObject(IClusterLink, link)
    service.cluster = link
    return service


def test_nicks_are_one_namespace_case_insensitively(service: ChatService) -> None:
    user(service, "Alice")
    _, conn = user(service, "bob", protocol="irc")
    with pytest.raises(NickInUse):
        service.rename(conn, "ALICE")
    with pytest.raises(NickInUse):
        service.claim_nick(service.connect(FakeClient(protocol="xmpp")), "alice")


def test_join_creates_room_with_creator_as_operator(service: ChatService) -> None:
    a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    room = service.join(ca, "Dev").room
    service.join(cb, "dev")
    assert room.name == "dev"
    assert room.members[ca.user].op and not room.members[cb.user].op
    assert [e.who.nick for e in a.of(Join)] == ["alice", "bob"]
    assert [e.who.nick for e in b.of(Join)] == ["bob"]


def test_join_says_what_it_did(service: ChatService) -> None:
    _, ca = user(service, "alice")
    _, cb = user(service, "bob")
    first = service.join(ca, "Dev")
    assert first.created and not first.already_member and first.room.name == "dev"
    second = service.join(cb, "dev")
    assert not second.created and not second.already_member and second.room is first.room
    again = service.join(cb, "DEV")
    assert again.already_member and not again.created and again.room is first.room


def test_room_and_user_events_name_the_connection_that_caused_them(
    service: ChatService,
) -> None:
    a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "dev")
    service.invite(ca, "bob", "dev")
    service.join(cb, "dev")
    service.set_topic(ca, "dev", "plans")
    service.set_mode(ca, "dev", [ModeItem(True, "voice", "bob")])
    service.set_away(cb, "lunch")
    service.rename(cb, "bobby")
    service.kick(ca, "dev", "bobby")
    kinds = (Join, Topic, ModeChange, Away, NickChange, Kick)
    seen = [(type(e).__name__, e.origin) for e in b.events if isinstance(e, kinds)]
    assert seen == [
        ("Join", b),
        ("Topic", a),
        ("ModeChange", a),
        ("Away", b),
        ("NickChange", b),
        ("Kick", a),
    ]
    assert [e.origin for e in b.of(Invite)] == [a]
    # What the server does on its own names no connection.
    service.kick_by_server("dev", "alice", "closing")
    assert [e.origin for e in a.of(Kick)][-1] is None


def test_room_message_reaches_every_member_once_with_id_and_time(service: ChatService) -> None:
    clients = []
    for nick in ("a1", "a2", "a3"):
        c, conn = user(service, nick)
        service.join(conn, "r")
        clients.append((c, conn))
    msg = service.say(clients[0][1], room="r", text="hello")
    for c, _ in clients:
        got = c.of(Message)
        assert got == [msg]
    assert msg.id and msg.ts == service.clock.seconds()
    assert msg.origin is clients[0][0]
    assert msg.source.nick == "a1"


def test_outside_messages_moderation_and_bans(service: ChatService) -> None:
    _, op = user(service, "op")
    _, member = user(service, "member")
    _, outsider = user(service, "outsider")
    service.join(op, "r")
    service.join(member, "r")
    with pytest.raises(CannotSend):
        service.say(outsider, room="r", text="x")
    service.set_mode(op, "r", [ModeItem(False, "no_external")])
    service.say(outsider, room="r", text="allowed now")
    service.set_mode(op, "r", [ModeItem(True, "moderated")])
    with pytest.raises(CannotSend):
        service.say(member, room="r", text="x")
    service.set_mode(op, "r", [ModeItem(True, "voice", "member")])
    service.say(member, room="r", text="voiced")
    service.set_mode(op, "r", [ModeItem(False, "moderated"), ModeItem(True, "ban", "outsider")])
    with pytest.raises(CannotSend):
        service.say(outsider, room="r", text="banned")
    with pytest.raises(JoinRefused) as err:
        service.join(outsider, "r")
    assert err.value.why == JoinRefused.BANNED


def test_join_rules_invite_key_limit_registered(service: ChatService) -> None:
    _, op = user(service, "op")
    _, guest = user(service, "guest")
    service.join(op, "r")
    service.set_mode(op, "r", [ModeItem(True, "invite_only")])
    with pytest.raises(JoinRefused) as err:
        service.join(guest, "r")
    assert err.value.why == JoinRefused.INVITE_ONLY
    service.invite(op, "guest", "r")
    service.join(guest, "r")
    service.part(guest, "r")
    with pytest.raises(JoinRefused):
        service.join(guest, "r")  # an invitation is used once
    service.set_mode(op, "r", [ModeItem(False, "invite_only"), ModeItem(True, "key", "sesame")])
    with pytest.raises(JoinRefused) as err:
        service.join(guest, "r", "wrong")
    assert err.value.why == JoinRefused.BAD_KEY
    service.join(guest, "r", "sesame")
    service.part(guest, "r")
    service.set_mode(op, "r", [ModeItem(False, "key"), ModeItem(True, "limit", "1")])
    with pytest.raises(JoinRefused) as err:
        service.join(guest, "r")
    assert err.value.why == JoinRefused.FULL
    service.set_mode(op, "r", [ModeItem(False, "limit"), ModeItem(True, "registered_only")])
    with pytest.raises(JoinRefused) as err:
        service.join(guest, "r")
    assert err.value.why == JoinRefused.REGISTERED_ONLY


def test_invite_exception_mask_passes_invite_only(service: ChatService) -> None:
    _, op = user(service, "op")
    _, friend = user(service, "friend")
    service.join(op, "r")
    service.set_mode(op, "r", [ModeItem(True, "invite_only"), ModeItem(True, "invite", "friend")])
    service.join(friend, "r")
    assert friend.user in service.get_room("r").members


def test_modes_need_operator_and_report_bad_items(service: ChatService) -> None:
    a, op = user(service, "op")
    _, pleb = user(service, "pleb")
    service.join(op, "r")
    service.join(pleb, "r")
    with pytest.raises(NotPermitted):
        service.set_mode(pleb, "r", [ModeItem(True, "moderated")])
    applied, errors = service.set_mode(
        op, "r", [ModeItem(True, "secret"), ModeItem(True, "op", "nobody"), ModeItem(True, "zzz")]
    )
    assert applied == (ModeItem(True, "secret"),)
    assert [type(e) for e in errors] == [NoSuchNick, UnknownMode]
    changes = a.of(ModeChange)
    assert len(changes) == 1 and changes[0].changes == applied
    # Setting what is already set changes nothing and emits nothing.
    assert service.set_mode(op, "r", [ModeItem(True, "secret")]) == ((), [])
    assert len(a.of(ModeChange)) == 1


def test_topic_lock_and_topic_event(service: ChatService) -> None:
    a, op = user(service, "op")
    _, pleb = user(service, "pleb")
    service.join(op, "r")
    service.join(pleb, "r")
    with pytest.raises(NotPermitted):
        service.set_topic(pleb, "r", "mine")
    service.set_topic(op, "r", "welcome")
    room = service.get_room("r")
    assert (room.topic, room.topic_by.split("!")[0]) == ("welcome", "op")
    assert a.of(Topic)[0].text == "welcome"
    service.set_mode(op, "r", [ModeItem(False, "topic_lock")])
    service.set_topic(pleb, "r", "mine")
    assert room.topic == "mine"


def test_kick_removes_member_and_tells_everyone(service: ChatService) -> None:
    a, op = user(service, "op")
    b, pleb = user(service, "pleb")
    service.join(op, "r")
    service.join(pleb, "r")
    with pytest.raises(NotPermitted):
        service.kick(pleb, "r", "op", "no")
    _, _outsider = user(service, "outsider")
    with pytest.raises(NotOnRoom):
        service.kick(op, "r", "outsider", "x")
    with pytest.raises(NoSuchNick):
        service.kick(op, "r", "nobody", "x")
    service.kick(op, "r", "PLEB", "bye")
    kick = b.of(Kick)[0]
    assert (kick.target.nick, kick.reason, kick.who.nick) == ("pleb", "bye", "op")
    assert a.of(Kick) == [kick]
    assert pleb.user not in service.get_room("r").members
    assert "r" not in pleb.user.rooms


def test_private_messages_reach_target_and_senders_connections(service: ChatService) -> None:
    a, ca = user(service, "alice")
    b, _ = user(service, "bob")
    msg = service.say(ca, nick="BOB", text="psst", kind="notice")
    assert b.of(Message) == [msg] and a.of(Message) == [msg]
    assert msg.target == "bob" and msg.kind == "notice"
    with pytest.raises(NoSuchNick):
        service.say(ca, nick="carol", text="x")
    with pytest.raises(ChatError):
        service.say(ca, nick="bob", text="")


def test_status_message_reaches_only_operators(service: ChatService) -> None:
    a, op = user(service, "op")
    b, pleb = user(service, "pleb")
    service.join(op, "r")
    service.join(pleb, "r")
    service.say(pleb, room="r", text="to ops", status="op")
    assert [m.text for m in a.of(Message)] == ["to ops"]
    assert [m.text for m in b.of(Message)] == ["to ops"]  # the sender's own echo
    assert not service.get_room("r").history  # status messages are not room history


def test_nick_change_and_quit_reach_room_mates_once(service: ChatService) -> None:
    a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    c, _ = user(service, "carol")
    for room in ("r1", "r2"):
        service.join(ca, room)
        service.join(cb, room)
    service.rename(ca, "alicia")
    assert len(b.of(NickChange)) == 1 and len(a.of(NickChange)) == 1 and not c.of(NickChange)
    assert b.of(NickChange)[0].new_nick == "alicia"
    assert service.whowas("alice")[0][0].nick == "alice"
    service.quit(ca, "gone")
    assert [(q.who.nick, q.reason) for q in b.of(Quit)] == [("alicia", "gone")]
    assert service.find_user("alicia") is None
    assert all(ca.user is None or ca.user not in r.members for r in service.rooms.values())


def test_empty_unregistered_room_disappears(service: ChatService) -> None:
    _, ca = user(service, "alice")
    service.join(ca, "tmp")
    service.part(ca, "tmp", "bye")
    assert service.get_room("tmp") is None
    with pytest.raises(NoSuchRoom):
        service.part(ca, "tmp")


def test_observers_hear_of_away_changes_of_users_in_no_shared_room(
    service: ChatService,
) -> None:
    seen: list[Any] = []
    service.observers.append(seen.append)
    _a, ca = user(service, "alice")
    seen.clear()
    service.set_away(ca, "lunch")
    service.set_away(ca, None)
    assert [(type(e), e.who.nick, e.message) for e in seen] == [
        (Away, "alice", "lunch"),
        (Away, "alice", None),
    ]


def test_away_is_seen_by_room_mates(service: ChatService) -> None:
    _a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "r")
    service.join(cb, "r")
    service.set_away(ca, "lunch")
    assert b.of(Away)[0].message == "lunch" and ca.user.who().away == "lunch"
    service.set_away(ca, None)
    assert b.of(Away)[1].message is None


def test_invite_requires_membership_and_not_already_there(service: ChatService) -> None:
    _a, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "r")
    with pytest.raises(NotOnRoom):
        service.invite(cb, "alice", "r")
    service.invite(ca, "bob", "r")
    assert b.of(Invite)[0].target == "bob"
    service.join(cb, "r")
    with pytest.raises(AlreadyOnRoom):
        service.invite(ca, "bob", "r")


def test_per_address_connection_limit() -> None:
    service = make_service(CoreSettings(max_connections_per_address=2))
    conns = [service.connect(FakeClient(address="198.51.100.7")) for _ in range(2)]
    with pytest.raises(LimitExceeded):
        service.connect(FakeClient(address="198.51.100.7"))
    service.quit(conns[0])
    service.connect(FakeClient(address="198.51.100.7"))


# -- accounts and multiclient --------------------------------------------------------------


def test_register_identify_and_wrong_password(service: ChatService) -> None:
    a, ca = user(service, "alice")
    record = result(service.register(ca, "correct horse"))
    assert record.name == "alice" and ca.user.account == "alice"
    assert {c.mechanism for c in record.credentials} == {"SCRAM-SHA-256", "SCRAM-SHA-1"}
    assert a.of(AccountChange)[0].account == "alice"
    stored = service.accounts.store.accounts["alice"]
    assert b"correct horse" not in repr(stored).encode()
    _, cx = user(service, "other")
    with pytest.raises(AccountError) as err:
        result(service.identify(cx, "wrong!", account="alice"))
    assert err.value.code == AccountError.BAD_PASSWORD


def test_failed_logins_are_throttled_per_account() -> None:
    service = make_service(CoreSettings(login_failure_burst=3, login_failure_period=10))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    _, cx = user(service, "mallory", address="198.51.100.7")
    codes = []
    for _ in range(5):
        try:
            result(service.identify(cx, "nope", account="alice"))
        except AccountError as err:
            codes.append(err.code)
    assert codes == ["bad_password"] * 3 + ["throttled"] * 2
    # Even the right password is refused while throttled, then allowed after the refill.
    with pytest.raises(AccountError):
        result(service.identify(cx, "secret-pass", account="alice"))
    # ... but not from the address that registered the account: its owner's.
    _, owner = user(service, "alice2")
    assert result(service.identify(owner, "secret-pass", account="alice")) is not None
    service.clock.advance(11)
    assert result(service.identify(cx, "secret-pass", account="alice")) is not None


def test_attempts_in_flight_are_counted_when_they_start() -> None:
    service = make_service(CoreSettings(login_failure_burst=3, login_failure_period=10))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    # Started together, before any is answered: each takes its token at once.
    attempts = [service.accounts.begin_login("alice", f"198.51.100.{i}") for i in range(3)]
    with pytest.raises(AccountError) as err:
        service.accounts.begin_login("alice", "198.51.100.99")
    assert err.value.code == AccountError.THROTTLED
    # A right password gives its token back.
    attempts[0].succeeded("alice")
    service.accounts.begin_login("alice", "198.51.100.99").failed()


def test_registration_can_be_closed() -> None:
    service = make_service(CoreSettings(registration="closed"))
    _, ca = user(service, "alice")
    with pytest.raises(AccountError) as err:
        result(service.register(ca, "secret-pass"))
    assert err.value.code == AccountError.CLOSED


def test_multiclient_one_member_many_connections(service: ChatService) -> None:
    a, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.join(ca, "r")
    b, cb = user(service, "bob")
    service.join(cb, "r")
    # A second connection (say XMPP) proves the account before claiming a nick.
    x = FakeClient(protocol="xmpp")
    cx = service.connect(x)
    service.login(cx, "alice")
    joined = service.claim_nick(cx, "whatever")
    assert joined is ca.user and len(joined.connections) == 2
    room = service.get_room("r")
    assert len(room.members) == 2
    msg = service.say(cb, room="r", text="hi")
    assert a.of(Message)[-1] is msg and x.of(Message)[-1] is msg
    own = service.say(cx, room="r", text="from phone")
    assert a.of(Message)[-1] is own and own.origin is x  # echoed to the sibling
    dm = service.say(cb, nick="alice", text="dm")
    assert a.of(Message)[-1] is dm and x.of(Message)[-1] is dm
    service.quit(cx, "phone off")
    assert not b.of(Quit) and ca.user in room.members
    service.quit(ca, "laptop off")
    assert b.of(Quit)[0].who.nick == "alice"


def test_identify_moves_a_guest_connection_to_the_online_account(service: ChatService) -> None:
    _a, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.join(ca, "r")
    g, cg = user(service, "visitor")
    service.join(cg, "lobby")
    result(service.identify(cg, "secret-pass", account="alice"))
    assert cg.user is ca.user
    assert [type(e).__name__ for e in g.events[-3:]] == ["Part", "NickChange", "Join"]
    assert service.find_user("visitor") is None


def test_nick_enforcement_renames_after_timeout() -> None:
    service = make_service(CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    t, ct = user(service, "alice")
    assert "registered" in t.of(ServerNotice)[0].text
    service.clock.advance(29)
    assert ct.user.nick == "alice"
    service.clock.advance(2)
    assert ct.user.nick.startswith("Guest")
    assert t.of(NickChange)[0].new_nick == ct.user.nick


def test_nicks_taken_in_one_turn_are_looked_up_together() -> None:
    turn_ends: list[Callable[[], None]] = []
    store = MemoryStore()
    asked: list[list[str]] = []
    lookup = store.registered_keys
    store.registered_keys = lambda keys: asked.append(list(keys)) or lookup(keys)  # type: ignore[method-assign]
    service = in_cluster(
        make_service(
            CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30),
            store=store,
            end_of_turn=turn_ends.append,
        )
    )
    _, ca = user(service, "alice")
    while turn_ends:
        turn_ends.pop()()
    service.clock.advance(NICK_CHECK_REST)
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    asked.clear()
    clients = [user(service, nick)[0] for nick in ("alice", "bob", "carol")]
    assert asked == [] and len(turn_ends) == 1
    turn_ends.pop()()
    assert asked == [["alice", "bob", "carol"]]
    notices = [[n.text for n in c.of(ServerNotice)] for c in clients]
    assert "registered" in notices[0][0] and notices[1:] == [[], []]


def test_one_process_asks_the_store_only_about_nicks_it_knows_are_accounts() -> None:
    # Every account of a lone process is made through it: a new connection's nick that is
    # no account it knows costs no trip to the store, and one it knows is still acted on.
    turn_ends: list[Callable[[], None]] = []
    store = MemoryStore()
    asked: list[list[str]] = []
    lookup = store.registered_keys
    store.registered_keys = lambda keys: asked.append(list(keys)) or lookup(keys)  # type: ignore[method-assign]
    service = make_service(
        CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30),
        store=store,
        end_of_turn=turn_ends.append,
    )
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    asked.clear()
    clients = [user(service, nick)[0] for nick in ("bob", "carol", "alice")]
    while turn_ends:
        turn_ends.pop()()
    assert asked == [["alice"]]
    notices = [[n.text for n in c.of(ServerNotice)] for c in clients]
    assert notices[:2] == [[], []] and "registered" in notices[2][0]
    service.clock.advance(31)
    assert clients[2].of(NickChange)[0].new_nick.startswith("Guest")


def test_one_nick_lookup_at_a_time_and_the_next_takes_all_that_waited() -> None:
    # Under a burst of registrations, nicks taken while a lookup is in the store's thread
    # wait for it and go together in the next one: not one trip per reactor turn.
    turn_ends: list[Callable[[], None]] = []
    store = MemoryStore()
    result(store.create_account(AccountRecord(name="dora", credentials=(), created_at=0.0)))
    pending: list[tuple[list[str], Deferred[set[str]]]] = []

    def lookup(keys: Any) -> Deferred[set[str]]:
        d: Deferred[set[str]] = Deferred()
        pending.append((list(keys), d))
        return d

    store.registered_keys = lookup  # type: ignore[method-assign]
    service = in_cluster(
        make_service(
            CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30),
            store=store,
            end_of_turn=turn_ends.append,
        )
    )

    def end_turn() -> None:
        while turn_ends:
            turn_ends.pop()()

    user(service, "alice")
    end_turn()
    assert [keys for keys, _ in pending] == [["alice"]]
    # Two more turns while the first lookup is out: no new trip.
    user(service, "bob")
    end_turn()
    d_client, _ = user(service, "dora")
    end_turn()
    assert len(pending) == 1
    pending[0][1].callback(set())
    # ... and after a short rest, the next lookup takes all that waited.
    assert len(pending) == 1
    service.clock.advance(NICK_CHECK_REST)
    assert [keys for keys, _ in pending[1:]] == [["bob", "dora"]]
    pending[1][1].callback({"dora"})
    # What the second lookup found is acted on: dora is told, as with a lookup of its own.
    assert "dora is a registered nick" in d_client.of(ServerNotice)[0].text
    # Nothing waits now: after the rest, the next nick goes at the end of its turn again.
    service.clock.advance(NICK_CHECK_REST)
    user(service, "erin")
    end_turn()
    assert [keys for keys, _ in pending[2:]] == [["erin"]]


def test_nick_lookups_end_quietly_when_the_server_stops() -> None:
    # A lookup is in the store's thread when the server begins to stop, with more nicks
    # waiting for it; the store closes before the rest is over.  Nothing more goes to the
    # store, nobody is written to, and nothing is logged as a failure.
    turn_ends: list[Callable[[], None]] = []
    store = MemoryStore()
    result(store.create_account(AccountRecord(name="dora", credentials=(), created_at=0.0)))
    pending: list[tuple[list[str], Deferred[set[str]]]] = []
    closed = False

    def lookup(keys: Any) -> Deferred[set[str]]:
        if closed:
            return fail(RuntimeError("the store is closed"))
        d: Deferred[set[str]] = Deferred()
        pending.append((list(keys), d))
        return d

    store.registered_keys = lookup  # type: ignore[method-assign]
    service = in_cluster(
        make_service(
            CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30),
            store=store,
            end_of_turn=turn_ends.append,
        )
    )
    logged: list[dict[str, Any]] = []
    service.log = Logger(observer=logged.append)

    def end_turn() -> None:
        while turn_ends:
            turn_ends.pop()()

    a_client, _ = user(service, "dora")
    end_turn()
    user(service, "bob")
    end_turn()
    assert len(pending) == 1
    result(service.shutdown())
    closed = True
    a_client.events.clear()
    pending[0][1].callback({"dora"})
    service.clock.advance(NICK_CHECK_REST)
    end_turn()
    assert len(pending) == 1 and a_client.events == []
    assert [e for e in logged if "log_failure" in e] == []
    # A nick claimed meanwhile (a connection not yet closed) asks nothing of the store.
    user(service, "carol")
    end_turn()
    service.clock.advance(NICK_CHECK_REST)
    assert len(pending) == 1 and [e for e in logged if "log_failure" in e] == []


def test_a_failing_store_is_still_reported_by_the_nick_lookup() -> None:
    store = MemoryStore()
    store.registered_keys = lambda keys: fail(StorageUnavailable())  # type: ignore[method-assign]
    service = in_cluster(
        make_service(CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30), store=store)
    )
    logged: list[dict[str, Any]] = []
    service.log = Logger(observer=logged.append)
    user(service, "alice")
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(StorageUnavailable)


def test_identifying_in_time_stops_enforcement() -> None:
    service = make_service(CoreSettings(nick_enforcement="timeout", nick_enforce_timeout=30))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    _, ct = user(service, "alice")
    result(service.identify(ct, "secret-pass"))
    service.clock.advance(60)
    assert ct.user.nick == "alice" and ct.user.account == "alice"


def test_strict_enforcement_keeps_a_registered_nick_for_its_account(
    service: ChatService,
) -> None:
    assert service.settings.nick_enforcement == "strict"
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    with pytest.raises(NickReserved):
        user(service, "alice")
    with pytest.raises(NickReserved):
        user(service, "ALICE")
    _, cb = user(service, "bob")
    with pytest.raises(NickReserved):
        service.rename(cb, "Alice")
    # Logged in to another account: still not alice's nick.
    result(service.register(cb, "bob-pass"))
    with pytest.raises(NickReserved):
        service.rename(cb, "alice")
    assert cb.user.nick == "bob"
    # The owner takes it: logged in first, or renaming once logged in.
    owner = service.connect(FakeClient())
    result(service.identify(owner, "secret-pass", account="alice"))
    assert service.claim_nick(owner, "alice").nick == "alice"
    service.quit(owner)
    _, later = user(service, "carol")
    result(service.identify(later, "secret-pass", account="alice"))
    service.rename(later, "alice")
    assert later.user.nick == "alice"


def test_strict_enforcement_renames_at_once_what_it_learns_late() -> None:
    store = MemoryStore()
    service = in_cluster(make_service(store=store))
    # An account this process has not heard of (made by another node after the start).
    result(store.create_account(AccountRecord(name="dora", credentials=(), created_at=0.0)))
    assert not service.accounts.is_registered("dora")
    d, cd = user(service, "dora")
    assert cd.user.nick.startswith("Guest")
    assert "dora is a registered nick" in d.of(ServerNotice)[0].text
    # ... and from then on refuses it at once.
    with pytest.raises(NickReserved):
        user(service, "dora")


def test_logging_out_on_a_registered_nick_makes_a_guest(service: ChatService) -> None:
    a, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.logout(ca)
    assert ca.user.nick.startswith("Guest") and ca.user.account is None
    assert a.of(NickChange)[-1].new_nick == ca.user.nick


def test_service_and_guest_names_are_reserved_everywhere(service: ChatService) -> None:
    for nick in ("NickServ", "chanserv", "OperServ", "Guest1", "guest12345"):
        with pytest.raises(BadName):
            user(service, nick)
    _, cb = user(service, "bob")
    with pytest.raises(BadName):
        service.rename(cb, "NICKSERV")
    for name in ("nickserv", "Guest42"):
        with pytest.raises(BadName):
            result(service.accounts.create(name, "secret-pass"))
        with pytest.raises(BadName):
            result(service.accounts.register(name, "secret-pass", mode="open"))
    # Names that only look alike are anyone's.
    for nick in ("Guesty", "Guest1a", "nickserv2"):
        user(service, nick)


def test_a_message_to_an_account_reaches_only_its_owner() -> None:
    service = make_service(CoreSettings(nick_enforcement="timeout"))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    squatter, _cs = user(service, "alice")
    _, cx = user(service, "xena")
    with pytest.raises(NoSuchNick):
        service.say(cx, account="alice", text="for alice only")
    assert squatter.of(Message) == []
    owner, co = user(service, "olive")
    result(service.identify(co, "secret-pass", account="alice"))
    msg = service.say(cx, account="alice", text="for alice only")
    assert msg.target == "olive" and msg.target_account == "alice"
    assert owner.of(Message)[-1].text == "for alice only"
    assert squatter.of(Message) == []


def test_change_password_and_drop(service: ChatService) -> None:
    a, ca = user(service, "alice")
    result(service.register(ca, "first-pass"))
    with pytest.raises(AccountError):
        result(service.change_password(ca, "wrong-pass", "second-pass"))
    result(service.change_password(ca, "first-pass", "second-pass"))
    x, cx = user(service, "x")
    assert result(service.identify(cx, "second-pass", account="alice")) is not None
    result(service.drop(ca, "second-pass"))
    assert "alice" not in service.accounts.store.accounts
    # The other session ends at once; the one that asked once it has been told.
    assert x.disconnected == "Account deleted" and a.disconnected is None
    service.clock.advance(0)
    assert a.disconnected == "Account deleted"
    assert service.find_user("alice") is None and service.connection_count() == 0


def test_a_password_change_ends_the_other_sessions(service: ChatService) -> None:
    a, ca = user(service, "alice")
    result(service.register(ca, "first-pass"))
    other, co = user(service, "x", protocol="xmpp")
    result(service.identify(co, "first-pass", account="alice"))
    before = FakeClient(protocol="irc")
    cb = service.connect(before)
    result(service.identify(cb, "first-pass", account="alice"))  # no nick yet
    result(service.change_password(ca, "first-pass", "second-pass"))
    assert other.disconnected == "Password changed" == before.disconnected
    assert a.disconnected is None and ca.user.account == "alice"
    # The operator's change ends every session.
    result(service.set_account_password("alice", "third-pass"))
    assert a.disconnected == "Password changed" and service.connection_count() == 0


def test_release_nick_renames_a_guest_holder() -> None:
    service = make_service(CoreSettings(nick_enforcement="timeout"))
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.quit(ca)
    _g, cg = user(service, "alice")
    assert service.release_nick("alice", "alice")
    assert cg.user.nick != "alice" and service.find_user("alice") is None


# -- persistence ---------------------------------------------------------------------------


def test_registered_room_survives_a_restart() -> None:
    store = MemoryStore()
    service = make_service(store=store)
    _, ca = user(service, "alice")
    result(service.register(ca, "secret-pass"))
    service.join(ca, "team")
    service.set_topic(ca, "team", "plans")
    result(service.register_room(ca, "team"))
    service.set_mode(ca, "team", [ModeItem(True, "moderated"), ModeItem(True, "ban", "troll")])
    service.say(ca, room="team", text="remember me")
    result(service.shutdown())

    again = make_service(store=store)
    room = again.get_room("team")
    assert room is not None and room.registered and room.topic == "plans"
    assert "moderated" in room.flags and room.bans[0].mask == "troll!*@*"
    assert [m.text for m in room.history] == ["remember me"]
    # The accounts' names are loaded at start: the nick is kept for its account at once.
    with pytest.raises(NickReserved):
        user(again, "alice")
    c2 = again.connect(FakeClient())
    result(again.identify(c2, "secret-pass", account="alice"))
    again.claim_nick(c2, "alice")
    again.join(c2, "team")
    assert room.members[c2.user].op  # operator status by account


def test_history_is_written_in_batches_and_queried() -> None:
    store = MemoryStore()
    service = make_service(CoreSettings(history_flush_interval=1.0), store=store)
    _, ca = user(service, "alice")
    service.join(ca, "r")
    sent = []
    for i in range(5):
        sent.append(service.say(ca, room="r", text=f"m{i}"))
        service.clock.advance(0.1)
    assert store.messages == []  # not yet: one batch per interval
    service.clock.advance(1)
    assert [m.text for m in store.messages] == [f"m{i}" for i in range(5)]
    assert [m.text for m in result(service.history_latest("r", 2))] == ["m3", "m4"]
    assert [m.text for m in result(service.history_before("r", sent[2].ts, 10))] == ["m0", "m1"]
    assert [m.text for m in result(service.history_after("r", sent[2].ts, 1))] == ["m3"]
    assert [m.text for m in result(service.history_around("r", sent[2].ts, 3))] == [
        "m1",
        "m2",
        "m3",
    ]
    assert result(service.history_find(sent[1].id)).text == "m1"
    assert [m.text for m in service.recent("r", 2)] == ["m3", "m4"]


def test_shutdown_tells_every_connection_and_flushes() -> None:
    store = MemoryStore()
    service = make_service(CoreSettings(history_flush_interval=60), store=store)
    a, ca = user(service, "alice")
    pre = FakeClient()
    service.connect(pre)
    service.join(ca, "r")
    service.say(ca, room="r", text="last words")
    result(service.shutdown("maintenance"))
    assert a.disconnected == "maintenance" and pre.disconnected == "maintenance"
    assert [m.text for m in store.messages] == ["last words"]


def test_history_waits_for_a_failing_store_up_to_its_limit_then_refuses() -> None:
    class FailingStore(MemoryStore):
        down = True

        def append(self, messages: Any) -> Deferred:
            if self.down:
                return fail(StorageUnavailable(error=OSError("disk full")))
            return super().append(messages)

    store = FailingStore()
    settings = CoreSettings(history_flush_interval=0, history_unstored_limit=5)
    service = make_service(settings, store=store)
    _, ca = user(service, "alice")
    b, cb = user(service, "bob")
    service.join(ca, "r")
    service.join(cb, "r")
    sent = [service.say(ca, room="r", text=f"m{i}") for i in range(5)]
    assert service.store_failing and service.history_pending() == 5
    # The limit is reached: the next message is refused before anyone sees it.
    with pytest.raises(StorageUnavailable, match="was not sent"):
        service.say(ca, room="r", text="refused")
    assert "refused" not in [m.text for m in b.of(Message)]
    # Messages that are not stored (a guest's private message) still go.
    service.say(ca, nick="bob", text="not stored")
    assert b.of(Message)[-1].text == "not stored"
    # Retried on the clock while the store fails; once it works, written in order.
    service.clock.advance(1)
    assert store.messages == []
    store.down = False
    service.clock.advance(1)
    assert [m.id for m in store.messages] == [m.id for m in sent]
    assert not service.store_failing and service.history_pending() == 0
    service.say(ca, room="r", text="accepted again")
    assert store.messages[-1].text == "accepted again"


def test_a_failing_client_does_not_stop_fan_out(service: ChatService) -> None:
    class Broken(FakeClient):
        def deliver(self, event: Any) -> None:
            raise RuntimeError("boom")

    _, ca = user(service, "alice")
    broken = Broken()
    cb = service.connect(broken)
    service.claim_nick(cb, "broken")
    c, cc = user(service, "carol")
    for conn in (ca, cb, cc):
        service.join(conn, "r")
    service.say(ca, room="r", text="still arrives")
    assert c.of(Message)[0].text == "still arrives"


# -- layering ------------------------------------------------------------------------------

FORBIDDEN_IMPORTS = (
    "socket",
    "ssl",
    "asyncio",
    "select",
    "selectors",
    "sqlite3",
    "http",
    "urllib",
    "twisted.internet.reactor",
    "twisted.internet.protocol",
    "twisted.internet.tcp",
    "twisted.internet.ssl",
    "twisted.internet.endpoints",
    "twisted.internet.threads",
    "twisted.enterprise",
    "twisted.web",
    "protocols",
    "chatserver.storage",
    "chatserver.server",
    "chatserver.cli",
    "chatserver.config",
    "lxml",
)


def test_core_imports_no_networking_storage_or_protocol_code() -> None:
    core = Path(__file__).resolve().parents[2] / "chatserver" / "core"
    offenders = []
    for path in sorted(core.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IMPORTS):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    assert len(list(core.glob("*.py"))) >= 8


# -- batched fan-out -----------------------------------------------------------------------


class BatchClient(FakeClient):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.batches: list[Any] = []

    def deliver_batch(self, batch: Any) -> None:
        self.batches.append(batch)
        self.events.extend(batch.messages)


def test_messages_said_in_one_read_reach_other_members_as_one_batch(service: ChatService) -> None:
    sender, cs = user(service, "sender")
    batcher = BatchClient()
    cb = service.connect(batcher)
    service.claim_nick(cb, "batcher")
    plain, cp = user(service, "plain")
    for conn in (cs, cb, cp):
        service.join(conn, "r")
    with service.batch():
        first = service.say(cs, room="r", text="one")
        assert sender.of(Message) == [first]  # the sender's own copy is not held back
        assert not batcher.of(Message) and not plain.of(Message)
        second = service.say(cs, room="r", text="two")
    assert [b.messages for b in batcher.batches] == [(first, second)]
    assert plain.of(Message) == [first, second]  # a client without deliver_batch: one by one
    assert sender.of(Message) == [first, second]
    assert [m.text for m in service.get_room("r").history] == ["one", "two"]


def test_any_other_event_flushes_the_batch_first(service: ChatService) -> None:
    _, cs = user(service, "sender")
    watcher, cw = user(service, "watcher")
    service.join(cs, "r")
    service.join(cw, "r")
    watcher.clear()
    with service.batch():
        service.say(cs, room="r", text="bye all")
        service.part(cs, "r", "leaving")
    assert [type(e).__name__ for e in watcher.events] == ["Message", "Part"]


def test_batches_from_two_senders_keep_each_senders_copy_single(service: ChatService) -> None:
    a, ca = user(service, "a")
    b, cb = user(service, "b")
    service.join(ca, "r")
    service.join(cb, "r")
    with service.batch():
        service.say(ca, room="r", text="from a")
        with service.batch():  # nested: flushed by the outermost only
            service.say(cb, room="r", text="from b")
        # b said its message after a's: it gets a's first, then its own copy, as everyone does.
        assert [m.text for m in b.of(Message)] == ["from a", "from b"]
        assert [m.text for m in a.of(Message)] == ["from a"]
    assert [m.text for m in a.of(Message)] == ["from a", "from b"]
    assert [m.text for m in b.of(Message)] == ["from a", "from b"]


def test_room_messages_of_one_turn_reach_each_member_in_one_batch_in_order() -> None:
    turn_ends: list[Callable[[], None]] = []
    service = make_service(end_of_turn=turn_ends.append)
    a, ca = user(service, "a")
    b, cb = user(service, "b")
    c, cc = user(service, "c")
    for conn in (ca, cb, cc):
        service.join(conn, "r")
    while turn_ends:  # the nick checks of the set-up
        turn_ends.pop()()
    for fake in (a, b, c):
        fake.events.clear()
    before = service.stats["deliveries"]
    # Three reads in one reactor turn: a, b, then a again.
    for conn, text in ((ca, "a1"), (cb, "b1"), (ca, "a2")):
        with service.batch():
            service.say(conn, room="r", text=text)
    assert c.events == [] and len(turn_ends) == 1
    # Each sender has its own copies, and what the room said before each of them.
    assert [m.text for m in a.of(Message)] == ["a1", "b1", "a2"]
    assert [m.text for m in b.of(Message)] == ["a1", "b1"]
    turn_ends.pop()()
    assert [m.text for m in c.of(Message)] == ["a1", "b1", "a2"]
    assert len(c.batches) == 1
    assert [m.text for m in b.of(Message)] == ["a1", "b1", "a2"]
    assert [m.text for m in a.of(Message)] == ["a1", "b1", "a2"]
    assert service.stats["deliveries"] - before == 9


def test_senders_not_shown_their_own_messages_get_the_turn_in_one_batch() -> None:
    turn_ends: list[Callable[[], None]] = []
    service = make_service(end_of_turn=turn_ends.append)
    a, ca = user(service, "a", echoes_own_messages=False)
    b, cb = user(service, "b", echoes_own_messages=False)
    c, cc = user(service, "c")
    for conn in (ca, cb, cc):
        service.join(conn, "r")
    while turn_ends:  # the nick checks of the set-up
        turn_ends.pop()()
    for fake in (a, b, c):
        fake.events.clear()
    before = service.stats["deliveries"]
    for conn, text in ((ca, "a1"), (cb, "b1"), (ca, "a2"), (cc, "c1")):
        with service.batch():
            service.say(conn, room="r", text=text)
    # Nothing reaches a and b before the end of the turn: their own copies are theirs to drop.
    assert [m.text for m in a.of(Message)] == ["a1", "a2"]
    assert [m.text for m in b.of(Message)] == ["b1"]
    assert [m.text for m in c.of(Message)] == ["a1", "b1", "a2", "c1"]
    a.events.clear()
    b.events.clear()
    turn_ends.pop()()
    assert [m.text for m in a.of(Message)] == ["b1", "c1"] and len(a.batches) == 1
    assert [m.text for m in b.of(Message)] == ["a1", "a2", "c1"] and len(b.batches) == 1
    assert [m.text for m in c.of(Message)] == ["a1", "b1", "a2", "c1"]
    assert service.stats["deliveries"] - before == 12


def test_senders_with_their_echo_at_the_turn_end_get_everything_in_one_batch() -> None:
    turn_ends: list[Callable[[], None]] = []
    service = make_service(end_of_turn=turn_ends.append)
    a, ca = user(service, "a")
    a.echo_at_turn_end = True  # type: ignore[attr-defined]
    b, cb = user(service, "b")
    for conn in (ca, cb):
        service.join(conn, "r")
    while turn_ends:  # the nick checks of the set-up
        turn_ends.pop()()
    a.events.clear()
    for conn, text in ((cb, "b1"), (ca, "a1"), (cb, "b2")):
        with service.batch():
            service.say(conn, room="r", text=text)
    assert a.of(Message) == []
    turn_ends.pop()()
    assert [m.text for m in a.of(Message)] == ["b1", "a1", "b2"] and len(a.batches) == 1
    assert [m.text for m in b.of(Message)][-3:] == ["b1", "a1", "b2"]


def test_any_other_event_flushes_the_turns_room_messages_first() -> None:
    turn_ends: list[Callable[[], None]] = []
    service = make_service(end_of_turn=turn_ends.append)
    _a, ca = user(service, "a")
    b, cb = user(service, "b")
    service.join(ca, "r")
    service.join(cb, "r")
    while turn_ends:  # the nick checks of the set-up
        turn_ends.pop()()
    b.events.clear()
    with service.batch():
        service.say(ca, room="r", text="hello")
        service.part(ca, "r")
    kinds = [type(e).__name__ for e in b.events]
    assert kinds == ["Message", "Part"]
    turn_ends.pop()()
    assert [type(e).__name__ for e in b.events] == ["Message", "Part"]
