"""How the core's operator and voice status reads as roles and affiliations."""

from __future__ import annotations

from chatserver.core.events import ModeItem
from chatserver.core.service import ChatService
from tests.xmpp.test_muc_harness import MUC, Occupant, codes, item, other


def roles(occupant: Occupant, room: str = "dev") -> dict[str, tuple[str, str]]:
    """nick -> (role, affiliation) as a fresh join shows them."""
    out = occupant.join(room)
    return {
        p.get("from").rpartition("/")[2]: (item(p).get("role"), item(p).get("affiliation"))
        for p in out
        if p.tag == "presence"
    }


def test_unregistered_room_operators_are_owners(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    carol = Occupant(service, "carol")
    assert roles(carol) == {
        "alice": ("moderator", "owner"),
        "bob": ("participant", "none"),
        "carol": ("participant", "none"),
    }


def test_registered_room_owner_admins_and_members(service: ChatService) -> None:
    owner = Occupant(service, "olga", account="olga")
    owner.join("dev")
    service.register_room(owner.core, "dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    dave = Occupant(service, "dave", account="dave")
    dave.join("dev")
    erin = Occupant(service, "erin", account="erin")
    erin.join("dev")
    service.set_mode(
        owner.core, "dev", [ModeItem(True, "op", "bob"), ModeItem(True, "voice", "dave")]
    )
    service.set_mode(owner.core, "dev", [ModeItem(True, "moderated")])
    carol = Occupant(service, "carol")
    assert roles(carol) == {
        "olga": ("moderator", "owner"),
        "bob": ("moderator", "admin"),
        "dave": ("participant", "member"),
        "erin": ("visitor", "none"),
        "carol": ("visitor", "none"),
    }


def test_an_account_change_refreshes_the_occupant(service: ChatService) -> None:
    alice = Occupant(service, "alice")
    alice.join("dev")
    _irc, bob = other(service, "bob")
    service.join(bob, "dev")
    service.set_mode(alice.core, "dev", [ModeItem(True, "voice", "bob")])
    alice.take()
    service.login(bob, "bob")
    (pres,) = alice.take()
    assert pres.get("from") == f"dev@{MUC}/bob"
    assert item(pres).get("affiliation") == "member" and codes(pres) == set()
