"""Multi-user chat (XEP-0045) over the core's rooms, for the room service ``conference.<domain>``.

Importing the package registers its stanza handlers with the router:

- :mod:`join`: entering, leaving and renaming by presence; the room's state for a joiner
- :mod:`messages`: groupchat lines, subject changes, private messages, invitations
- :mod:`admin`: kick, ban, voice and operator status through muc#admin
- :mod:`owner`: the room configuration form through muc#owner
- :mod:`disco`: discovery of the service and its rooms, pings

:mod:`render` turns the core's room events into stanzas for every XMPP occupant, whatever
protocol caused them.  Beside them: :mod:`occupants` (roles and affiliations from operator and
voice status), :mod:`presence` and :mod:`chat` (stanza builders), :mod:`history` (replay on
join), :mod:`build` (render once, splice ``to``), :mod:`names` (display names), :mod:`ns`.

A user is in a room with all of its connections (the core's model): a leave, a kick or a nick
change by one of them is seen by all, and every XMPP resource of a user in a room gets the
room's traffic.
"""

from protocols.xmpp.muc import admin, disco, join, messages, owner, render

__all__ = ["admin", "disco", "join", "messages", "owner", "render"]
