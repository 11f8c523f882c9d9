"""The SQLite schema, as an ordered list of migration steps.

Step N (counting from 1) takes a database at ``PRAGMA user_version`` N-1 to N.  The store applies
the missing steps at ``open()``, each in its own transaction together with the version bump, so a
crash part-way leaves a database at a known version.  To change the schema, append one step to
``MIGRATIONS``; never edit or reorder a step that has shipped, since existing databases have
already run it.

The version lives in ``PRAGMA user_version`` (the database header) rather than a table: it costs
nothing to read, cannot disagree with itself, and is written by the same transaction as the step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence

# A step is either plain DDL statements or, for data migrations, a function run on a cursor.
# Statements run one by one through ``execute``: ``executescript`` would COMMIT first and break
# the one-transaction-per-step promise.
Step = Sequence[str] | Callable[[sqlite3.Cursor], None]

_V1_INITIAL: tuple[str, ...] = (
    """
    CREATE TABLE accounts (
        key        TEXT PRIMARY KEY,  -- casefold(name): the lookup key in every protocol
        name       TEXT NOT NULL,     -- as registered, for display
        created_at REAL NOT NULL,
        email      TEXT
    )
    """,
    """
    CREATE TABLE credentials (
        account    TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        mechanism  TEXT NOT NULL,
        -- position in AccountRecord.credentials, so that records round-trip exactly
        seq        INTEGER NOT NULL,
        salt       BLOB NOT NULL,
        stored_key BLOB NOT NULL,
        server_key BLOB NOT NULL,
        iterations INTEGER NOT NULL,
        PRIMARY KEY (account, mechanism)
    )
    """,
    # Lists live in JSON columns, not child tables: a room is always loaded and saved whole, the
    # order of each list is kept for free, and nothing queries rooms by member.
    """
    CREATE TABLE rooms (
        name       TEXT PRIMARY KEY,  -- the room key (already folded)
        owner      TEXT NOT NULL,
        created_at REAL NOT NULL,
        topic      TEXT NOT NULL DEFAULT '',
        topic_by   TEXT NOT NULL DEFAULT '',
        topic_at   REAL NOT NULL DEFAULT 0,
        modes      TEXT NOT NULL DEFAULT '[]',  -- [[mode, arg or null], ...]
        ops        TEXT NOT NULL DEFAULT '[]',  -- [account, ...]
        voices     TEXT NOT NULL DEFAULT '[]',  -- [account, ...]
        bans       TEXT NOT NULL DEFAULT '[]',  -- [[mask, set_by, set_at], ...]
        invites    TEXT NOT NULL DEFAULT '[]',  -- [mask, ...]
        extra      TEXT NOT NULL DEFAULT '{}'   -- {key: value}
    )
    """,
    # seq is an INTEGER PRIMARY KEY so that it survives VACUUM (a bare rowid may be renumbered);
    # it gives pruning and export a stable insertion order.
    """
    CREATE TABLE history (
        seq      INTEGER PRIMARY KEY,
        id       TEXT NOT NULL UNIQUE,
        target   TEXT NOT NULL,
        ts       REAL NOT NULL,
        nick     TEXT NOT NULL,
        ident    TEXT NOT NULL,
        host     TEXT NOT NULL,
        account  TEXT,
        realname TEXT NOT NULL,
        kind     TEXT NOT NULL,
        text     TEXT NOT NULL,
        tags     TEXT NOT NULL DEFAULT '[]'  -- [[key, value], ...]
    )
    """,
    # Every history query is "one target, a ts range, ordered by (ts, id)": this index answers
    # all of them, including the descending scans of latest/before.
    "CREATE INDEX history_target_ts_id ON history (target, ts, id)",
)

# XMPP rosters (RFC 6121): a contact per row; deleting the account deletes its roster.
_V2_ROSTER: tuple[str, ...] = (
    """
    CREATE TABLE roster_items (
        account      TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        jid          TEXT NOT NULL,     -- the contact's bare JID, casefolded
        name         TEXT,
        groups       TEXT NOT NULL DEFAULT '[]',  -- [group, ...]
        subscription TEXT NOT NULL DEFAULT 'none',  -- none, to, from, both
        ask          TEXT,              -- 'subscribe' while our request is pending
        pending_in   INTEGER NOT NULL DEFAULT 0,  -- their request awaits our answer
        in_roster    INTEGER NOT NULL DEFAULT 1,  -- 0: known only by a pending request
        PRIMARY KEY (account, jid)
    )
    """,
)

# Server-wide bans set by operators at run time (config-file bans are not stored).
_V3_SERVER_BANS: tuple[str, ...] = (
    """
    CREATE TABLE server_bans (
        mask   TEXT PRIMARY KEY,  -- normalized: nick!ident@host glob, or $a:account
        reason TEXT NOT NULL DEFAULT '',
        set_by TEXT NOT NULL DEFAULT '',
        set_at REAL NOT NULL DEFAULT 0
    )
    """,
)

# Account names an operator has invited while registration is by invitation.  No foreign key
# to accounts: an invitation names an account that does not exist yet, and registering it
# deletes the row in the transaction that inserts the account.
_V4_REGISTRATION_INVITES: tuple[str, ...] = (
    """
    CREATE TABLE registration_invites (
        key        TEXT PRIMARY KEY,  -- casefold(name), as accounts.key
        name       TEXT NOT NULL,     -- as invited, for display
        invited_by TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
)

# Personal data of XMPP accounts: PEP nodes (XEP-0163), private XML storage (XEP-0049) and
# vCards (XEP-0054); deleting the account deletes them.
_V5_PEP: tuple[str, ...] = (
    """
    CREATE TABLE pep_nodes (
        account       TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        kind          TEXT NOT NULL,  -- pep, private, vcard
        node          TEXT NOT NULL,
        access_model  TEXT NOT NULL DEFAULT 'presence',  -- open, presence, whitelist
        persist_items INTEGER NOT NULL DEFAULT 1,
        max_items     INTEGER NOT NULL DEFAULT 1,  -- 0: up to the account's limit
        PRIMARY KEY (account, kind, node)
    )
    """,
    # seq keeps publication order: the newest items are the last rows.
    """
    CREATE TABLE pep_items (
        seq          INTEGER PRIMARY KEY,
        account      TEXT NOT NULL,
        kind         TEXT NOT NULL,
        node         TEXT NOT NULL,
        item_id      TEXT NOT NULL,
        payload      TEXT NOT NULL,
        published_at REAL NOT NULL,
        UNIQUE (account, kind, node, item_id),
        FOREIGN KEY (account, kind, node) REFERENCES pep_nodes (account, kind, node)
            ON DELETE CASCADE
    )
    """,
)

# Block lists (one per account, on every protocol): a name per row.
_V6_BLOCKS: tuple[str, ...] = (
    """
    CREATE TABLE blocks (
        account TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
        name    TEXT NOT NULL,  -- casefolded account name or nick
        PRIMARY KEY (account, name)
    )
    """,
)

# Private messages, one row per registered account that keeps the message (both ends, or the
# registered end when the other is a guest): each archive is read, expired and deleted on its
# own, and an account that is deleted takes its rows with it and nobody else's.  The id is the
# message id every protocol shows (IRC msgid, XMPP stanza-id, line id), so the same message has
# the same id in both archives.
_V7_PRIVATE_ARCHIVE: tuple[str, ...] = (
    """
    CREATE TABLE private_history (
        seq      INTEGER PRIMARY KEY,
        owner    TEXT NOT NULL,   -- casefold(account) whose archive this row is in
        peer     TEXT NOT NULL,   -- casefold(nick) of the other side of the conversation
        id       TEXT NOT NULL,
        target   TEXT NOT NULL,   -- the recipient's nick as it was
        ts       REAL NOT NULL,
        nick     TEXT NOT NULL,
        ident    TEXT NOT NULL,
        host     TEXT NOT NULL,
        account  TEXT,
        realname TEXT NOT NULL,
        kind     TEXT NOT NULL,
        text     TEXT NOT NULL,
        tags     TEXT NOT NULL DEFAULT '[]',
        stanza   TEXT,            -- the sender's XMPP stanza, kept whole for XMPP recipients
        offline  INTEGER NOT NULL DEFAULT 0,  -- 1 until delivered to an owner who was away
        UNIQUE (owner, id)
    )
    """,
    # One conversation (CHATHISTORY, MAM with=) and the whole archive (MAM, TARGETS).
    "CREATE INDEX private_owner_peer_ts ON private_history (owner, peer, ts, id)",
    "CREATE INDEX private_owner_ts ON private_history (owner, ts, id)",
    "CREATE INDEX private_offline ON private_history (owner) WHERE offline = 1",
    # Read position per account and conversation (a room key or a folded nick).
    """
    CREATE TABLE read_markers (
        account TEXT NOT NULL,
        target  TEXT NOT NULL,
        ts      REAL NOT NULL,
        PRIMARY KEY (account, target)
    )
    """,
)

# Room events for history replay (joins, parts, quits, kicks, nick changes, topics): a table
# of their own, so that every reader of messages stays as it is.
_V9_ROOM_EVENTS: tuple[str, ...] = (
    """
    CREATE TABLE room_events (
        seq      INTEGER PRIMARY KEY,
        id       TEXT NOT NULL UNIQUE,
        target   TEXT NOT NULL,
        ts       REAL NOT NULL,
        kind     TEXT NOT NULL,
        nick     TEXT NOT NULL,
        ident    TEXT NOT NULL,
        host     TEXT NOT NULL,
        account  TEXT,
        realname TEXT NOT NULL,
        text     TEXT NOT NULL,
        object   TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX room_events_target_ts_id ON room_events (target, ts, id)",
)

# Per-account settings that outlive a connection: always-on membership (the nick, the rooms,
# and when the last connection closed, so that a restart still knows what was missed), and
# message archive preferences (XEP-0313).  Each row goes with its account.
_V8_ACCOUNT_SETTINGS: tuple[str, ...] = (
    """
    CREATE TABLE always_on (
        account   TEXT PRIMARY KEY REFERENCES accounts (key) ON DELETE CASCADE,
        nick      TEXT NOT NULL,
        ident     TEXT NOT NULL,
        host      TEXT NOT NULL,
        realname  TEXT NOT NULL,
        rooms     TEXT NOT NULL DEFAULT '[]',  -- JSON list of room keys
        last_seen REAL                         -- when its last connection closed; NULL: connected
    )
    """,
    """
    CREATE TABLE archive_prefs (
        account      TEXT PRIMARY KEY REFERENCES accounts (key) ON DELETE CASCADE,
        default_mode TEXT NOT NULL,              -- 'always', 'never' or 'roster'
        always       TEXT NOT NULL DEFAULT '[]',  -- JSON lists of peers (folded account or ~nick)
        never        TEXT NOT NULL DEFAULT '[]'
    )
    """,
)

MIGRATIONS: tuple[Step, ...] = (
    _V1_INITIAL,
    _V2_ROSTER,
    _V3_SERVER_BANS,
    _V4_REGISTRATION_INVITES,
    _V5_PEP,
    _V6_BLOCKS,
    _V7_PRIVATE_ARCHIVE,
    _V8_ACCOUNT_SETTINGS,
    _V9_ROOM_EVENTS,
)
"""Index i holds the step to version i + 1.  Append here; the tuple's length is the version."""

SCHEMA_VERSION = len(MIGRATIONS)
