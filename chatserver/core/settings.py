"""Settings the core needs, built by chatserver.config from the TOML file (defaults live there)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CoreSettings:
    server_name: str = "chatserver.local"
    # Messages kept in memory per room (and replayed from the store after a restart).
    history_in_memory: int = 100
    # Seconds between history batch writes; 0 writes every message at once.
    history_flush_interval: float = 1.0
    # Messages that may wait in memory while the database cannot be written; past it,
    # messages that would be stored are refused (their senders are told) until it can.
    history_unstored_limit: int = 50_000
    # How a registered nick is kept for its account: "strict" refuses it to anyone not logged
    # in to the account; "timeout" lets anyone take it, shown as a guest (never as the
    # account), and renames them to a guest nick unless they log in within
    # `nick_enforce_timeout` seconds.
    nick_enforcement: str = "strict"
    # Seconds a session on a registered nick has to identify before it is renamed ("timeout").
    nick_enforce_timeout: float = 60.0
    guest_prefix: str = "Guest"
    # "open": anyone may register a nick; "closed": only `chatserver account create`;
    # "invite": only a name an operator has invited (`chatserver account invite NAME`).
    registration: str = "open"
    # Registrations by users (not `chatserver account create`) must give an email address,
    # on every protocol; it is kept with the account, not verified.
    registration_email_required: bool = False
    min_password_length: int = 6
    max_rooms_per_user: int = 100
    max_connections_per_address: int = 20
    # Addresses or networks spared the per-address limits (connections at once, new accounts):
    # a web gateway or a bouncer that speaks for many users from one address.
    address_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")
    # New accounts from one address: a burst of `registration_burst`, then one more per
    # `registration_period` seconds (registration floods).
    registration_burst: int = 3
    registration_period: float = 600.0
    # Login attempts: a bucket of `burst` tries refilled at one per `login_failure_period`
    # seconds per account (not binding addresses that logged in to it lately), and four times
    # that per address (see AccountManager.begin_login).
    login_failure_burst: int = 5
    login_failure_period: float = 30.0
    scram_iterations: int = 4096
    topic_max: int = 390
    kick_reason_max: int = 255
    away_max: int = 200
    realname_max: int = 100
    # Secret for the host cloaks that stand in for client addresses; empty = random per start.
    cloak_secret: str = ""
    # Seconds between writes of the time up to which each connected always-on account has
    # been given everything (its clients were connected): after a crash its next client is
    # given what was said since, so at most this many seconds again and nothing lost.
    always_on_checkpoint: float = 60.0
    # Replay this many history lines to a client that joins a room (protocols may ask for fewer).
    join_history_lines: int = 10
    # Days that room and private history is kept (from [history] retention); 0: forever.
    history_retention: float = 0.0


# Settings that shaped state built at start (cloaks, per-room history buffers, the server's
# name in every event): a config reload keeps their old values until a restart.
RESTART_ONLY_SETTINGS = frozenset({"server_name", "cloak_secret", "history_in_memory"})
