"""Channel commands: JOIN, PART, TOPIC, NAMES, LIST, KICK, INVITE, MODE."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatserver.core.errors import BadName
from chatserver.core.names import room_key
from protocols.irc.channels import room_of
from tests.irc.conftest import IrcWorld, commands, find, last_param, one


def pair(irc: IrcWorld, room: str = "#r", **caps: tuple[str, ...]) -> tuple:
    a = irc.client("alice", caps=caps.get("a", ()))
    b = irc.client("bob", caps=caps.get("b", ()))
    a.send(f"JOIN {room}")
    b.send(f"JOIN {room}")
    a.take()
    b.take()
    return a, b


# -- JOIN / PART -------------------------------------------------------------------------------


def test_join_creates_room_with_names_and_op(irc: IrcWorld) -> None:
    a = irc.client("alice")
    out = a.ask("JOIN #Room")
    join = one(out, "JOIN")
    assert join.source.startswith("alice!") and join.params == ("#room",)
    names = one(out, "353")
    assert names.params[1:] == ("=", "#room", "@alice")
    assert one(out, "366").params[1] == "#room"
    assert "332" not in commands(out)  # no topic yet


def test_join_several_with_keys_and_errors(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #k", "MODE #k +k sesame")
    b = irc.client("bob")
    out = b.ask("JOIN #k,#open,bad,#x y")
    assert one(out, "475").params[1] == "#k"
    assert [m.params[0] for m in find(out, "JOIN")] == ["#open", "#x"]
    assert one(out, "403").params[1] == "bad"
    out = b.ask("JOIN #open,#k other,sesame")
    assert [m.params[0] for m in find(out, "JOIN")] == ["#k"]
    # Joining a room one is in says nothing.
    assert b.ask("JOIN #k") == []


def test_join_shows_topic(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #r", "TOPIC #r :the topic")
    b = irc.client("bob")
    out = b.ask("JOIN #r")
    assert last_param(one(out, "332")) == "the topic"
    who_time = one(out, "333")
    assert who_time.params[1] == "#r" and who_time.params[2].startswith("alice!")
    assert commands(out).index("332") < commands(out).index("353")


def test_join_refusals(irc: IrcWorld) -> None:
    a, b = pair(irc)
    b.send("PART #r")
    a.send("MODE #r +i")
    assert one(b.ask("JOIN #r"), "473")
    a.send("MODE #r -i+l 1")
    assert one(b.ask("JOIN #r"), "471")
    a.send("MODE #r -l+b bob!*@*")
    assert one(b.ask("JOIN #r"), "474")
    a.send("MODE #r -b+R bob")
    assert one(b.ask("JOIN #r"), "477")


def test_join_zero_parts_everything(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #a,#b")
    out = a.ask("JOIN 0")
    assert sorted(m.params[0] for m in find(out, "PART")) == ["#a", "#b"]
    assert a.user.rooms == {}


def test_part(irc: IrcWorld) -> None:
    a, b = pair(irc)
    out = a.ask("PART #r,#nope,#b@d :see you")
    part = one(out, "PART")
    assert part.params == ("#r", "see you")
    assert [m.params[1] for m in find(out, "403")] == ["#nope", "#b@d"]
    assert one(b.take(), "PART").params == ("#r", "see you")
    irc.client("carol").send("JOIN #other")
    assert one(b.ask("PART #other"), "442").params[1] == "#other"


# -- TOPIC -------------------------------------------------------------------------------------


def test_topic_query_set_and_lock(irc: IrcWorld) -> None:
    a, b = pair(irc)
    assert one(a.ask("TOPIC #r"), "331")
    out = a.ask("TOPIC #r :hello world")
    assert one(out, "TOPIC").params == ("#r", "hello world")
    assert one(b.take(), "TOPIC").params == ("#r", "hello world")
    out = b.ask("TOPIC #r")
    assert last_param(one(out, "332")) == "hello world"
    assert one(out, "333")
    # +t by default: only operators may set it.
    assert one(b.ask("TOPIC #r :mine"), "482").params[1] == "#r"
    a.send("MODE #r -t")
    assert one(b.ask("TOPIC #r :mine"), "TOPIC")
    assert one(b.ask("TOPIC #none"), "403")
    c = irc.client("carol")
    assert one(c.ask("TOPIC #r :x"), "442")
    # Non-members may read the topic of a public room, not of a secret one.
    assert one(c.ask("TOPIC #r"), "332")
    a.send("MODE #r +s")
    assert one(c.ask("TOPIC #r"), "442")


# -- NAMES -------------------------------------------------------------------------------------


def test_names_prefixes_and_caps(irc: IrcWorld) -> None:
    a = irc.client("alice", caps=("multi-prefix",))
    b = irc.client("bob", caps=("userhost-in-names",))
    a.send("JOIN #r")
    b.send("JOIN #r")
    a.send("MODE #r +v alice")
    names = last_param(one(a.ask("NAMES #r"), "353")).split()
    assert sorted(names) == ["@+alice", "bob"]
    names = last_param(one(b.ask("NAMES #r"), "353")).split()
    assert any(n.startswith("@alice!alice@") for n in names)
    assert any(n.startswith("bob!bob@") for n in names)


def test_names_without_args_and_secret_and_invisible(irc: IrcWorld) -> None:
    a, b = pair(irc)
    assert commands(a.ask("NAMES")) == ["366"]
    c = irc.client("carol")
    b.send("MODE bob +i")
    names = last_param(one(c.ask("NAMES #r"), "353")).split()
    assert names == ["@alice"]  # bob is invisible to outsiders
    a.send("MODE #r +s")
    assert commands(c.ask("NAMES #r")) == ["366"]
    assert commands(c.ask("NAMES #nonexistent")) == ["366"]


def test_names_split_over_lines(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #big")
    for i in range(60):
        irc.client(f"user{i:02d}with_a_long_nick").send("JOIN #big")
    lines = a.lines()
    a.send("NAMES #big")
    raw = [ln for ln in a.lines() if " 353 " in ln]
    assert len(raw) > 1
    assert all(len(ln.encode()) + 2 <= 512 for ln in raw)
    total = sum(len(ln.split(" :", 1)[1].split()) for ln in raw)
    assert total == 61
    assert lines


# -- LIST --------------------------------------------------------------------------------------


def test_list_with_masks_and_elist(irc: IrcWorld) -> None:
    a = irc.client("alice")
    b = irc.client("bob")
    a.send("JOIN #alpha,#beta,#secret", "TOPIC #alpha :first", "MODE #secret +s")
    b.send("JOIN #beta")
    c = irc.client("carol")
    out = c.ask("LIST")
    assert commands(out)[0] == "321" and commands(out)[-1] == "323"
    rooms = {m.params[1]: m for m in find(out, "322")}
    assert set(rooms) == {"#alpha", "#beta"}
    assert rooms["#beta"].params[2] == "2"
    assert last_param(rooms["#alpha"]).endswith("first")
    assert "[+nt]" in last_param(rooms["#alpha"])
    assert [m.params[1] for m in find(c.ask("LIST #al*"), "322")] == ["#alpha"]
    assert [m.params[1] for m in find(c.ask("LIST !#al*"), "322")] == ["#beta"]
    assert [m.params[1] for m in find(c.ask("LIST >1"), "322")] == ["#beta"]
    assert [m.params[1] for m in find(c.ask("LIST <2"), "322")] == ["#alpha"]
    irc.clock.advance(600)
    a.send("JOIN #new")
    assert [m.params[1] for m in find(c.ask("LIST C<5"), "322")] == ["#new"]
    assert sorted(m.params[1] for m in find(c.ask("LIST C>5"), "322")) == ["#alpha", "#beta"]
    assert [m.params[1] for m in find(c.ask("LIST T>5"), "322")] == ["#alpha"]
    # Members see their secret rooms.
    assert "#secret" in [m.params[1] for m in find(a.ask("LIST"), "322")]


# -- KICK / INVITE -----------------------------------------------------------------------------


def test_kick(irc: IrcWorld) -> None:
    a, b = pair(irc)
    c = irc.client("carol")
    c.send("JOIN #r")
    b.take()
    assert one(b.ask("KICK #r carol"), "482")
    out = a.ask("KICK #r bob,carol :behave")
    kicks = find(out, "KICK")
    assert [k.params for k in kicks] == [("#r", "bob", "behave"), ("#r", "carol", "behave")]
    assert one(b.take(), "KICK").params[1] == "bob"
    assert b.user.rooms == {}
    irc.client("dave")
    assert one(a.ask("KICK #r dave"), "441").params[1:3] == ("dave", "#r")
    assert one(a.ask("KICK #r nobody"), "401").params[1] == "nobody"
    assert one(a.ask("KICK #gone bob"), "403")
    # Default reason is the kicker's nick.
    b.send("JOIN #r")
    assert last_param(one(a.ask("KICK #r bob"), "KICK")) == "alice"


def test_invite_and_invite_notify(irc: IrcWorld) -> None:
    a = irc.client("alice")
    watcher = irc.client("wendy", caps=("invite-notify",))
    plain = irc.client("pete")
    a.send("JOIN #r", "MODE #r +i")
    watcher.send("JOIN #r")  # fails: invite only
    a.send("INVITE wendy #r")
    watcher.send("JOIN #r")
    plain.send("AWAY :lunch")
    watcher.take()
    a.take()
    out = a.ask("INVITE pete #r")
    assert one(out, "341").params[1:] == ("pete", "#r")
    assert last_param(one(out, "301")) == "lunch"
    assert "INVITE" not in commands(out)
    invite = one(plain.take(), "INVITE")
    assert invite.source.startswith("alice!") and invite.params == ("pete", "#r")
    assert one(watcher.take(), "INVITE").params == ("pete", "#r")
    assert one(plain.ask("JOIN #r"), "JOIN")
    assert one(a.ask("INVITE pete #r"), "443")
    assert one(a.ask("INVITE nobody #r"), "401")
    assert one(a.ask("INVITE pete #none"), "403")
    outsider = irc.client("olga")
    assert one(outsider.ask("INVITE pete #r"), "442")
    assert one(watcher.ask("INVITE olga #r"), "482")
    assert one(a.ask("INVITE pete"), "461")
    assert commands(a.ask("INVITE")) == ["337"]


# -- MODE --------------------------------------------------------------------------------------


def test_mode_query(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    a.send("MODE #r +kl key 10")
    out = a.ask("MODE #r")
    modeis = one(out, "324")
    assert modeis.params[1] == "#r"
    assert modeis.params[2] == "+ntkl"
    assert modeis.params[3:] == ("key", "10")
    assert one(out, "329").params[2].isdigit()
    c = irc.client("carol")
    assert one(c.ask("MODE #r"), "324").params[3:] == ("*", "10")
    assert one(c.ask("MODE #nope"), "403")


def test_mode_changes_are_broadcast(irc: IrcWorld) -> None:
    a, b = pair(irc)
    out = a.ask("MODE #r +mv-t bob")
    mode = one(out, "MODE")
    assert mode.params == ("#r", "+mv-t", "bob")
    assert one(b.take(), "MODE").params == ("#r", "+mv-t", "bob")
    # A change that changes nothing is not broadcast.
    assert a.ask("MODE #r +m") == []
    assert one(b.ask("MODE #r -m"), "482")


def test_mode_errors(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    out = a.ask("MODE #r +zq")
    assert [m.params[1] for m in find(out, "472")] == ["z", "q"]
    assert one(a.ask("MODE #r +l abc"), "696").params[1:4] == ("#r", "l", "abc")
    # Digits that are not ASCII (superscripts count as digits to str.isdigit) are refused too.
    assert one(a.ask("MODE #r +l \u00b2"), "696").params[1:4] == ("#r", "l", "\u00b2")
    assert one(a.ask("MODE #r +k"), "696")
    assert one(a.ask("MODE #r +o"), "696")
    assert one(a.ask("MODE #r +o nobody"), "401")
    irc.client("carol")
    assert one(a.ask("MODE #r +o carol"), "441")
    c = irc.client("dave")
    assert one(c.ask("MODE #r +m"), "442")


def test_ban_and_invite_exception_lists(irc: IrcWorld) -> None:
    a, b = pair(irc)
    out = a.ask("MODE #r +bI bad!*@* good")
    assert one(out, "MODE").params == ("#r", "+bI", "bad!*@*", "good!*@*")
    bans = a.ask("MODE #r +b")
    assert one(bans, "367").params[1:3] == ("#r", "bad!*@*")
    assert one(bans, "367").params[3].startswith("alice!")
    assert one(bans, "368")
    invex = b.ask("MODE #r I")
    assert one(invex, "346").params[1:] == ("#r", "good!*@*")
    assert one(invex, "347")
    # The invite exception lets a matching user past +i.
    a.send("MODE #r +i")
    good = irc.client("good")
    assert one(good.ask("JOIN #r"), "JOIN")
    out = a.ask("MODE #r -b bad!*@*")
    assert one(out, "MODE").params == ("#r", "-b", "bad!*@*")


def test_key_removal_and_limit(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    a.send("MODE #r +k secret")
    out = a.ask("MODE #r -k whatever")
    assert one(out, "MODE").params == ("#r", "-k", "*")
    out = a.ask("MODE #r +l 5")
    assert one(out, "MODE").params == ("#r", "+l", "5")
    out = a.ask("MODE #r -l")
    assert one(out, "MODE").params == ("#r", "-l")


def test_at_most_four_parameter_modes(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #r")
    for nick in ("b1", "b2", "b3", "b4", "b5"):
        irc.client(nick).send("JOIN #r")
    a.take()
    out = a.ask("MODE #r +vvvvv b1 b2 b3 b4 b5")
    assert one(out, "MODE").params == ("#r", "+vvvv", "b1", "b2", "b3", "b4")


def test_registered_only_and_secret_flags(irc: IrcWorld) -> None:
    a, _b = pair(irc)
    out = a.ask("MODE #r +sR")
    assert one(out, "MODE").params == ("#r", "+sR")
    room = irc.service.get_room("r")
    assert {"secret", "registered_only"} <= room.flags


def test_ban_list_is_bounded(irc: IrcWorld) -> None:
    a = irc.client("alice")
    a.send("JOIN #r")
    for i in range(25):
        a.send(f"MODE #r +bbbb a{i}x b{i}x c{i}x d{i}x")
    assert len(irc.service.get_room("r").bans) == 100
    assert one(a.ask("MODE #r +b onemore"), "478").params[1:3] == ("#r", "b")


@given(st.text(max_size=60) | st.from_regex(r"#[A-Za-z0-9._ -]{0,55}", fullmatch=True))
def test_room_of_is_the_fold_and_check_of_the_name(name: str) -> None:
    # room_of keeps its answers per name: asked twice, it answers as the fold and check do.
    try:
        expected = room_key(name[1:]) if name.startswith("#") else None
    except BadName:
        expected = None
    assert room_of(name) == expected
    assert room_of(name) == expected
