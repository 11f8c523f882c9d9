"""Namespaces and status codes of multi-user chat (XEP-0045) and the XEPs it leans on."""

from __future__ import annotations

from protocols.xmpp.stanzas import NS_CORRECT, NS_REPLY

MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
MUC_OWNER = "http://jabber.org/protocol/muc#owner"
MUC_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
MUC_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"
# The room keeps a client's message id when it reflects the message.
MUC_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
# XEP-0410: a ping to one's own occupant JID is answered by the room itself.
MUC_SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
DATA = "jabber:x:data"
DELAY = "urn:xmpp:delay"
SID = "urn:xmpp:sid:0"
MAM = "urn:xmpp:mam:2"
MAM_EXTENDED = "urn:xmpp:mam:2#extended"
# XEP-0421: an occupant's stable id in a room, on its presences and messages.
OCCUPANT_ID = "urn:xmpp:occupant-id:0"
# Message replies (XEP-0461) and corrections (XEP-0308), mapped to IRC client tags.
REPLY = NS_REPLY
CORRECT = NS_CORRECT
PING = "urn:xmpp:ping"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"

# Status codes (XEP-0045 §15.6).
NON_ANONYMOUS = "100"
SELF = "110"
LOGGED = "170"
CONFIG_CHANGED = "104"
CREATED = "201"
NICK_ASSIGNED = "210"
BANNED = "301"
NICK_CHANGED = "303"
KICKED = "307"
