"""The seams of the server (zope.interface): where the core meets protocols and storage."""

from __future__ import annotations

from zope.interface import Attribute, Interface

# How a handed-off client's relay ended, as the cluster tells the protocols' ends of it
# (protocols.transport.handoff): the other side closed, aborted, or its node is gone.
RELAY_CLOSED = "close"
RELAY_ABORTED = "abort"
RELAY_LOST = "lost"


class IChatClient(Interface):
    """One connection of a user, as the core sees it.  Implemented by each protocol."""

    protocol = Attribute("Short protocol name: 'irc', 'xmpp' or 'line'.")
    address = Attribute("The peer's address (shown to operators only, never to other users).")
    secure = Attribute("True when the connection is encrypted (TLS) or on loopback.")

    def deliver(event):
        """Render ``event`` (a chatserver.core.events record) in this protocol and send it.

        Called on the reactor thread; must not block and must not raise.
        """

    def disconnect(reason):
        """The server ends this connection: tell the peer ``reason`` in its protocol, then close."""

    def deliver_batch(batch):
        """Deliver a MessageBatch of room events, all to be written at once."""

    echoes_own_messages = Attribute(
        "Whether the connection is shown its own room messages.  One that is not never needs "
        "the room's earlier messages of the same turn before its own, so it gets everything at "
        "the end of the turn in one write."
    )
    echo_at_turn_end = Attribute(
        "True when its own room messages may come back in the turn's batch rather than at once "
        "(no label or reply has to carry them)."
    )

    def hold_output():
        """Keep everything written to the peer from now on until ``let_output_go``: the
        cluster holds a sender's answers (its echo, its acknowledgement) until Redis has
        taken the message.  Holds may overlap; they are let go in the order taken."""

    def let_output_go():
        """Let the oldest hold go (see ``hold_output``)."""


class IClusterLink(Interface):
    """What the core tells a cluster of processes sharing its users and rooms (cluster mode).

    The core calls it only for users of this process; what users of other nodes do comes
    back through ``ChatService.attach_remote`` and the usual API on their stand-in
    connections.
    """

    def check_claim(nick):
        """Raise a ChatError when a new nick cannot be confirmed cluster-wide now."""

    def check_join(room):
        """Raise a ChatError when a join cannot be shared with the other nodes now."""

    def claim_account(account):
        """A Deferred that fires (None) once this process holds ``account`` cluster-wide,
        before a login to it is confirmed; errback AccountError when another node holds it
        (with a connection of it there: the error's ``node`` names it) or the claim cannot
        be confirmed now."""

    def open_relay(node, state, end):
        """Hand a client whose socket is here to ``node``, which holds its account's user
        (``protocols.transport.handoff``): the relay's link (``send(data)``,
        ``close(reason, abort=False)``), or None when it cannot be done now.  ``end`` is
        told what the protocol on ``node`` writes (``received(data)``) and when it is done
        (``ended(how, reason)``)."""

    def local_event(event):
        """A user of this process did something others must see: a Presence (online), a
        NickChange, Quit, Join, Part, Kick, Invite, Away, AccountChange, Message,
        TagMessage (with tags, or a native form only: ``ChatService.pass_on``), Redaction,
        RoomRenamed, MetadataChange (of a user), UserModeChange or Wallops event.  Must
        not raise."""

    def publish_message(msg, nodes):
        """A room message (``msg``) of a user of this process, for the other nodes with
        members in the room (``nodes``: ``Room.nodes``, not empty): what ``local_event``
        does with a Message, without finding the nodes again, for the message said most.
        Must not raise."""

    def room_changed(room, by):
        """A user of this process (shown as the Who ``by``) changed the state of the room
        key ``room`` (modes, lists, topic, status, registration, metadata): the other nodes take it
        (``ChatService.room_state`` gives it).  Must not raise."""

    def server_ban_changed(ban, lifted):
        """An operator here set the server ban ``ban`` (a ServerBan) or lifted it
        (``lifted``); it is stored already.  Must not raise."""

    def account_changed(name, revoked):
        """The account ``name`` was created here (``revoked`` None) or deleted or its
        password changed (``revoked``: ACCOUNT_DELETED or PASSWORD_CHANGED).  Must not
        raise."""


class IClock(Interface):
    """Time as the core sees it: the reactor in production, ``twisted.internet.task.Clock`` in tests."""

    def seconds():
        """Current time in seconds since the epoch (float)."""

    def callLater(delay, f, *args, **kw):
        """Call ``f`` after ``delay`` seconds; returns an object with ``cancel()`` and ``active()``."""


class IAccountStore(Interface):
    """Accounts (registered nicks).  Every method returns a Deferred."""

    def get_account(name):
        """Fire with the AccountRecord for ``name`` (any case) or None."""

    def registered_keys(keys):
        """Fire with the set of the folded names in ``keys`` that are accounts."""

    def account_keys():
        """Fire with the folded name of every account."""

    def create_account(record):
        """Store a new AccountRecord; errback with AccountError(EXISTS) if the name is taken."""

    def update_credentials(name, credentials):
        """Replace the credentials of ``name``; fire True, or False if there is no such account."""

    def delete_account(name):
        """Delete the account; fire True if it existed."""

    def list_accounts():
        """Fire with every AccountRecord, sorted by name."""

    def create_invited_account(record, now):
        """Use up the unexpired invitation of ``record.name`` and store the account in one
        transaction; errback with AccountError(CLOSED) if there is no such invitation, EXISTS
        if the name is taken (the invitation then stays)."""

    def save_invite(invite):
        """Insert or replace a RegistrationInvite."""

    def get_invite(name, now):
        """Fire with the unexpired RegistrationInvite for ``name`` (any case) or None."""

    def delete_invite(name):
        """Withdraw the invitation for ``name``; fire True if there was one."""

    def purge_invites(now):
        """Delete the invitations expired at ``now``; fire with how many."""

    def list_invites(now):
        """Fire with every unexpired RegistrationInvite, sorted by name."""


class IServerBanStore(Interface):
    """Server bans (K-lines) set by operators at run time.  Every method returns a Deferred."""

    def load_server_bans():
        """Fire with every stored ServerBan."""

    def save_server_ban(ban):
        """Insert or replace a ServerBan (keyed by its mask)."""

    def delete_server_ban(mask):
        """Forget the ban on ``mask``; fire True if there was one."""


class IBlockStore(Interface):
    """Block lists: (account, blocked name) pairs, both casefolded.  Every method returns a
    Deferred."""

    def load_blocks():
        """Fire with every (account, name) pair."""

    def add_blocks(account, names):
        """Add names to the account's list (names already there are no change)."""

    def remove_blocks(account, names):
        """Remove names from the account's list."""


class IRoomStore(Interface):
    """Registered rooms.  Every method returns a Deferred."""

    def load_rooms():
        """Fire with a list of every RoomRecord."""

    def save_room(record):
        """Insert or replace a RoomRecord."""

    def delete_room(name):
        """Forget a registered room; fire True if it existed."""


class IHistoryStore(Interface):
    """Message history.  ``target`` is a room key.  Every method returns a Deferred.

    Queries fire with lists of chatserver.core.events.Message in ascending (ts, id) order;
    ``limit`` bounds the count, taking the messages nearest the anchor.
    """

    def append(messages):
        """Persist a batch (sequence) of Message records in one transaction."""

    def latest(target, limit):
        """The newest ``limit`` messages."""

    def before(target, ts, limit):
        """Messages strictly older than ``ts`` (the newest of them)."""

    def after(target, ts, limit):
        """Messages strictly newer than ``ts`` (the oldest of them)."""

    def between(target, start, end, limit):
        """Messages with start < ts < end (the oldest of them)."""

    def find(msgid):
        """Fire with the Message with that id, or None."""

    def targets(start, end, limit):
        """Fire with [(target, latest ts)] for targets whose latest message is in
        start < ts < end, ascending by that ts."""

    def purge(target):
        """Delete every message (and room event) of ``target``; fire with how many messages
        there were."""

    def append_events(records):
        """Persist a batch of chatserver.core.records.RoomEventRecord in one transaction."""

    def query_events(query):
        """Fire with a page of a room's events (an ArchiveQuery whose ``owner`` is the room
        key), RoomEventRecords in ascending (ts, id) order."""

    def find_event(msgid):
        """Fire with the RoomEventRecord with that id, or None."""

    def rename_target(old, new):
        """Move the history (messages, events, read positions) of the room ``old`` to
        ``new``; fire with how many messages moved."""

    def delete_message(msgid, owners):
        """Delete the message ``msgid`` from room history and from the private archives of
        the folded accounts ``owners``; fire with how many rows went."""

    def close():
        """Finish pending work and release the database."""


class IArchiveStore(Interface):
    """Private-message archives of accounts, read markers and expiry.  Every method returns a
    Deferred.  Messages come back as chatserver.core.events.Message with ``target`` set."""

    def append_private(entries):
        """Persist a batch of chatserver.core.records.ArchiveEntry in one transaction."""

    def query_private(query):
        """Fire with one page (an ArchiveQuery) of an account's archive, ascending (ts, id)."""

    def query_room(query):
        """Fire with one page of a room's history (``query.owner`` is the room key), as
        ``query_private`` pages an account's archive."""

    def find_private(owner, msgid):
        """Fire with the message ``msgid`` of ``owner``'s archive, or None."""

    def private_targets(owner, start, end, limit):
        """Fire with [(peer, latest ts)] of ``owner``'s conversations in start < ts < end."""

    def take_offline(owner, limit):
        """Fire with the messages kept for ``owner`` while away, and mark them delivered."""

    def mark_offline(owner, msgids):
        """Mark the messages ``msgids`` of ``owner``'s archive undelivered again (taken by
        the next ``take_offline``); fire with how many there were."""

    def purge_private(owner, before=None):
        """Delete ``owner``'s archive (only what is older than ``before`` when given); fire
        with how many messages went."""

    def purge_room_before(target, before):
        """Delete the messages of the room ``target`` older than ``before``."""

    def expire(table, before, batch):
        """Delete up to ``batch`` of the oldest messages older than ``before`` from 'history'
        (rooms), 'private_history' or 'room_events'; fire with how many went (fewer than
        ``batch``: done)."""

    def get_read_marker(account, target):
        """Fire with the read position (ts) of ``account`` in ``target``, or None."""

    def set_read_marker(account, target, ts):
        """Move the read position forward to ``ts`` (never back); fire with where it is."""


class IAccountSettingsStore(Interface):
    """Per-account settings that outlive connections.  Every method returns a Deferred."""

    def load_always_on():
        """Fire with every chatserver.core.records.AlwaysOnRecord (``name`` filled in)."""

    def save_always_on(record):
        """Insert or replace an account's AlwaysOnRecord."""

    def delete_always_on(account):
        """Forget the folded ``account``'s always-on membership."""

    def touch_always_on(accounts, ts):
        """Set ``last_seen`` to ``ts`` for each of the folded ``accounts`` (those connected)."""

    def load_archive_prefs():
        """Fire with [(folded account, chatserver.core.records.ArchivePrefs)]."""

    def save_archive_prefs(account, prefs):
        """Insert or replace the folded ``account``'s ArchivePrefs."""
