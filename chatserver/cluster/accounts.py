"""One account, one node: a lease per logged-in account, and handing an always-on user over.

Redis holds ``account:<casefolded account>``: the node that holds the account's user.  A
login claims it before it is confirmed to the client (``claim_account``); as with nicks, the
claim succeeds when the key is free, already this node's, or names a node whose ``node:``
key has expired, and one Lua script does the check and the claim together, so of two
logins to one account at the same instant on two nodes exactly one gets it.  The key lives
as long as its node's heartbeat (a dead node's accounts free themselves within one lease);
it is given up when the account's last session here ends, claimed again after Redis comes
back, and announced again if Redis lost its data.

A claim refused by a live node asks that node to hand the account over (a ``release`` op):

- it has a connection of the account (or a login to it under way): it answers ``kept``, and
  the login here is refused, naming that node;
- it keeps the account's always-on user without connections: it turns its user into a
  stand-in of this node's (what its users say in the user's rooms goes to this node from
  then on), writes what it had not written yet (its history, the user's always-on record),
  and then tells every node (``moved``): each re-homes its stand-in, and this node takes the
  account and nick keys over from it and makes the user its own, caught up to when the
  giving node last caught it up.  The login then goes on as for any always-on user: same
  nick, same rooms, what was missed given once; nobody sees it quit or part;
- it has nothing of the account (a key left over): it gives the key, with no user;
- the account's user is on a third node (being handed over there): as when it is connected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.internet import defer
from twisted.logger import Logger

from chatserver.cluster.part import NodePart
from chatserver.cluster.remote import RemoteClient
from chatserver.core.errors import AccountError
from chatserver.core.events import AccountChange, Event, Quit
from chatserver.core.handover import HELD_CONNECTED, HELD_NOTHING
from chatserver.core.identity import elsewhere
from chatserver.core.names import casefold

log = Logger()

# KEYS[1]: the account key; ARGV: this node, the node key prefix.  Returns '' when claimed
# (free, or this node's already), '+<node>' when taken from a node that is gone, else the
# name of the live node that holds it.
CLAIM_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[1] then
  return '+' .. cur
end
return ''
"""
# Each of KEYS that is ARGV[1]'s (or free) becomes ARGV[2]'s.
HAND_SCRIPT = """
for _, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if not cur or cur == ARGV[1] then
    redis.call('SET', key, ARGV[2])
  end
end
return 0
"""
# KEYS[1] is deleted if it is ARGV[1]'s.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""
SCRIPTS = {"claim_account": CLAIM_SCRIPT, "hand": HAND_SCRIPT, "release_account": RELEASE_SCRIPT}

UNAVAILABLE_LOGIN = (
    "the cluster cannot confirm logins now (Redis is unreachable); try again shortly"
)


@dataclass(slots=True)
class _Asked:
    """A release asked of ``node``, and the logins here waiting for its answer."""

    node: str
    timer: Any
    # The account as the login gave it (stored form).
    account: str
    waiters: list[defer.Deferred[None]] = field(default_factory=list)


class AccountLeases(NodePart):
    """The part of ClusterNode that claims accounts and hands always-on users over."""

    # Provided by ClusterNode.
    lease: float
    clock: Any
    node_prefix: str
    nick_prefix: str
    _commands: Any
    _sha: dict[str, str]
    _remote: dict[str, dict[str, Any]]

    if TYPE_CHECKING:

        def _conn(self, node: str, nick: str) -> Any: ...
        def _remove(self, node: str, conn: Any, reason: str) -> None: ...
        def _ended_here(self, client: RemoteClient, reason: str) -> None: ...

    def _init_accounts(self, prefix: str) -> None:
        self.account_prefix = f"{prefix}:account:"
        # Folded account -> the release asked for it, while its answer is awaited.
        self._asked: dict[str, _Asked] = {}
        # Folded account -> claims of it sent and not answered yet: a release asked
        # meanwhile is refused (the login here is about to be confirmed).
        self._claiming: dict[str, int] = {}
        self.account_handlers = {
            "release": self._on_release,
            "kept": self._on_kept,
            "moved": self._on_moved,
        }

    def _account_key(self, account: str) -> str:
        return self.account_prefix + casefold(account)

    async def _load_account_scripts(self, proto: Any) -> None:
        for name, script in SCRIPTS.items():
            self._sha[name] = await proto.execute_command("SCRIPT", "LOAD", script)

    # -- claiming ----------------------------------------------------------------------------

    def _claim(self, proto: Any, key: str) -> defer.Deferred[str]:
        """Claim the account ``key`` (casefolded) for this node: fires with "" when it is
        ours now, "+" and the name of a gone node it was taken from (ours now too), or the
        name of the live node that holds it."""
        d = proto.execute_command(
            "EVALSHA",
            self._sha["claim_account"],
            1,
            self._account_key(key),
            self.name,
            self.node_prefix,
        )
        return d.addCallback(_owner)

    def claim_account(self, account: str) -> defer.Deferred[None]:
        proto = self._commands.proto
        if proto is None or not self.up:
            return defer.fail(AccountError(AccountError.UNAVAILABLE, UNAVAILABLE_LOGIN))
        key = casefold(account)
        self._claiming[key] = self._claiming.get(key, 0) + 1
        d: defer.Deferred[Any] = self._claim(proto, key)
        d.addBoth(self._claim_answered, key)
        d.addCallbacks(self._account_claimed, self._claim_failed, (account,))
        return d

    def _claim_answered(self, result: Any, key: str) -> Any:
        left = self._claiming.get(key, 1) - 1
        if left:
            self._claiming[key] = left
        else:
            self._claiming.pop(key, None)
        return result

    def _claim_failed(self, failure: Any) -> None:
        failure.trap(txredisapi.ConnectionError, txredisapi.ResponseError)
        raise AccountError(AccountError.UNAVAILABLE, UNAVAILABLE_LOGIN)

    def _account_claimed(self, owner: str, account: str) -> Any:
        if not owner:
            return None
        if owner.startswith("+"):
            return self._take_from_dead(owner[1:], account)
        return self._ask(owner, account)

    def _take_from_dead(self, node: str, account: str) -> defer.Deferred[None]:
        """The account was ``node``'s, which is gone: as after a crash, a stand-in of its
        user still here quits, and an always-on user comes back here from the store."""
        log.info("account={account} of lost node={node} is taken here", account=account, node=node)
        user = self.service.find_account_user(account)
        if user is not None and user.node == node:
            conn = self._conn(node, user.nick)
            if conn is not None:
                self._remove(node, conn, f"{node} lost")
        d = self.service.restore_always_on(account)
        d.addErrback(lambda f: log.failure("cluster: restoring always-on {a}", f, a=account))
        return d.addCallback(lambda _: None)

    def _ask(self, node: str, account: str) -> defer.Deferred[None]:
        key = casefold(account)
        asked = self._asked.get(key)
        if asked is None or asked.node != node:
            # Its node answers within a store round trip; one that does not within two
            # leases is probably gone, which the claim tried again then finds.
            timer = self.clock.callLater(2 * self.lease, self._unanswered, key)
            asked = self._asked[key] = _Asked(node, timer, account)
            self._publish({"k": "release", "account": account}, targets=node)
        d: defer.Deferred[None] = defer.Deferred()
        asked.waiters.append(d)
        return d

    def _unanswered(self, key: str) -> None:
        asked = self._asked.pop(key, None)
        if asked is None:
            return
        proto = self._commands.proto
        if proto is None or not self.up:
            self._settle(asked, AccountError(AccountError.UNAVAILABLE, UNAVAILABLE_LOGIN))
            return
        d = self._claim(proto, key)

        def again(owner: str) -> Any:
            if owner and not owner.startswith("+"):
                self._settle(asked, elsewhere(asked.account, owner))
                return None
            taken = self._take_from_dead(owner[1:], key) if owner else defer.succeed(None)
            return taken.addCallback(lambda _: self._settle(asked, None))

        d.addCallbacks(
            again,
            lambda f: self._settle(
                asked, AccountError(AccountError.UNAVAILABLE, UNAVAILABLE_LOGIN)
            ),
        )

    def _node_gone(self, node: str) -> None:
        """``node`` was counted lost: the logins waiting for its answer claim again now (its
        key has lapsed), rather than when the wait runs out."""
        for key in [key for key, asked in self._asked.items() if asked.node == node]:
            asked = self._asked[key]
            if asked.timer.active():
                asked.timer.cancel()
            self._unanswered(key)

    def _answered(self, account: str, refusal: AccountError | None) -> None:
        asked = self._asked.pop(casefold(account), None)
        if asked is not None:
            self._settle(asked, refusal)

    def _settle(self, asked: _Asked, refusal: AccountError | None) -> None:
        if asked.timer.active():
            asked.timer.cancel()
        for d in asked.waiters:
            if refusal is None:
                d.callback(None)
            else:
                d.errback(
                    AccountError(
                        refusal.code, refusal.reason, node=refusal.node, account=refusal.account
                    )
                )

    # -- giving up ---------------------------------------------------------------------------

    def _account_event(self, event: Event) -> None:
        """A local user quit or logged out: its account's lease goes once nothing of the
        account is left here (checked at the end of the turn, when the core is done)."""
        if isinstance(event, Quit):
            account = event.who.account
        elif isinstance(event, AccountChange):
            account = event.previous
        else:
            return
        if account is not None:
            self.clock.callLater(0, self._release_if_unheld, account)

    def _release_if_unheld(self, account: str) -> None:
        proto = self._commands.proto
        key = casefold(account)
        if (
            proto is None
            or "release_account" not in self._sha
            or key in self._claiming
            or self.service.account_holding(account) != HELD_NOTHING
        ):
            return
        d = proto.execute_command(
            "EVALSHA", self._sha["release_account"], 1, self._account_key(key), self.name
        )
        d.addErrback(lambda f: None)

    async def _reclaim_accounts(self, proto: Any) -> None:
        """Claim again the account of every local user and login (after Redis came back, or
        lost its data)."""
        held = {
            casefold(user.account)
            for user in self.service.users
            if user.node is None and user.account is not None
        }
        held.update(
            casefold(conn.account)
            for conn in self.service.connections.values()
            if conn.user is None and conn.account is not None
        )
        for key in sorted(held):
            owner = await self._claim(proto, key)
            if owner and not owner.startswith("+"):
                log.warn(
                    "account={account} was taken by node={node} while Redis was unreachable",
                    account=key,
                    node=owner,
                )

    # -- answering another node --------------------------------------------------------------

    def _on_release(self, node: str, op: dict[str, Any]) -> None:
        account = op["account"]
        held = self.service.account_holding(account)
        if (
            held == HELD_CONNECTED
            or casefold(account) in self._claiming
            # Its user is another node's (being handed over there): not this node's to give.
            or (held == HELD_NOTHING and self.service.find_account_user(account) is not None)
        ):
            self._publish({"k": "kept", "account": account}, targets=node)
        elif held == HELD_NOTHING:
            self._publish(_moved(account, None, 0.0, node), targets=node)
        else:
            self._give(account, node)

    def _give(self, account: str, node: str) -> None:
        """Hand the always-on user of ``account`` to ``node``: from now on a stand-in here,
        so what this node's users say in its rooms goes to ``node``; ``moved`` is sent once
        what was said before is in the store, where ``node`` reads what the user missed.
        Sent when Redis is back, if it is away meanwhile (as every entry is)."""
        user = self.service.find_account_user(account)
        client = RemoteClient(node, user.secure, self._ended_here)
        given = self.service.give_user(account, client, node)
        if given is None:
            return
        conn, since = given
        client.conn = conn
        self._remote.setdefault(node, {})[conn.user.key] = conn
        nick = conn.user.nick
        log.info("always-on account={account} handed to node={node}", account=account, node=node)
        d = self.service.written()
        d.addErrback(
            lambda f: log.failure("cluster: writing before handing {a} over", f, a=account)
        )
        d.addCallback(lambda _: self._publish(_moved(account, nick, since, node)))

    def _on_kept(self, node: str, op: dict[str, Any]) -> None:
        self._answered(op["account"], elsewhere(op["account"], node))

    def _on_moved(self, node: str, op: dict[str, Any]) -> None:
        to = op["to"]
        nick = op["nick"]
        account = op["account"]
        conn = self._conn(node, nick) if nick is not None else None
        taken: defer.Deferred[Any] = defer.succeed(None)
        if conn is not None and conn.user is not None:
            key = conn.user.key
            self._remote.get(node, {}).pop(key, None)
            if to == self.name:
                self.service.take_user(conn, float(op["since"]))
            else:
                conn.client.node = to
                self.service.rehome_user(conn, to)
                self._remote.setdefault(to, {})[key] = conn
        elif to == self.name and nick is not None:
            # Given a user this node did not know of: it comes from the store instead.
            taken = self.service.restore_always_on(account)
            taken.addErrback(lambda f: log.failure("cluster: restoring always-on {a}", f, a=nick))
        if to != self.name:
            return
        # The giving node's account (and nick) keys become this node's, then the login
        # waiting for them goes on.
        proto = self._commands.proto
        if proto is not None and self.up:
            keys = [self._account_key(account)]
            if nick is not None:
                keys.append(self.nick_prefix + casefold(nick))
            handed = proto.execute_command(
                "EVALSHA", self._sha["hand"], len(keys), *keys, node, self.name
            )
            handed.addErrback(lambda f: log.failure("redis: taking {a} over", f, a=account))
            taken.addCallback(lambda _: handed)
        taken.addBoth(lambda _: self._answered(account, None))


def _moved(account: str, nick: str | None, since: float, node: str) -> dict[str, Any]:
    return {"k": "moved", "account": account, "nick": nick, "since": since, "to": node}


def _owner(reply: Any) -> str:
    """The claim script's reply as text ("" for nil)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply or "")
