"""WEBIRC: a web gateway (The Lounge, Kiwi IRC's webircgateway) says whom it connects for.

``WEBIRC <password> <gateway> <hostname> <ip> [:<options>]``, before registration.  Only a
connection from one of the gateway's ``hosts`` in ``[[webirc]]`` may send it, and only with
that gateway's password; the connection then counts as coming from ``ip``: server bans, the
per-address limit and the cloaked host all follow the user's own address instead of the
gateway's.  Any failure closes the connection (the IRCv3 WEBIRC rule): a gateway that
misconfigured its password must not quietly put every user under its own address.
The password check is the operators' one (same cost for a wrong name or password, and the
same per-address login throttle).

The options (the fifth parameter, space-separated ``key`` or ``key=value`` tokens) may say
``secure``: the user reached the gateway over TLS.  The connection then counts as secure (WHOIS
671, passwords accepted) if the gateway's own link to us is secure too (TLS or loopback); without
the flag it does not, even over a TLS link from the gateway, since the user's own hop was plain.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatserver.auth.operators import OperatorRefused, check_operator
from chatserver.core.errors import AccountError, Banned, LimitExceeded
from protocols.irc import numerics as n
from protocols.irc.commands import command
from protocols.transport import peer

if TYPE_CHECKING:
    from protocols.irc.connection import IrcConnection

log = Logger()


def _from_gateway(address: str, hosts: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(net, strict=False) for net in hosts)


def _options(params: list[str]) -> set[str]:
    """The option keys of WEBIRC's fifth parameter (values are not used)."""
    if len(params) < 5:
        return set()
    return {token.partition("=")[0].lower() for token in params[4].split()}


@command("WEBIRC", min_params=4, pre_registration=True)
def webirc(conn: IrcConnection, msg: Any) -> Deferred[Any] | None:
    if conn.registered or conn.pending_nick is not None or conn.ident is not None:
        # The address must be settled before anything is done under it.
        conn.reply(n.ERR_ALREADYREGISTERED, "WEBIRC must come before NICK and USER")
        return None
    password, gateway, _hostname, claimed = msg.params[:4]
    options = _options(msg.params)
    gateways = [g for g in conn.factory.webirc if _from_gateway(conn.address, g.hosts)]
    if not gateways:
        log.info("irc WEBIRC refused from {address}: not a gateway", address=conn.address)
        conn.disconnect("WEBIRC is not allowed from your address")
        return None
    try:
        address = str(ipaddress.ip_address(claimed))
    except ValueError:
        conn.disconnect("WEBIRC: invalid IP address")
        return None
    d = check_operator(
        conn.service, gateways, gateway, password, address=conn.address, protocol=conn.protocol
    )

    def accepted(entry: Any) -> None:
        if conn.closing or conn.core is None:
            return
        gateway_address = conn.address
        try:
            conn.service.readdress(conn.core, address)
        except (Banned, LimitExceeded) as err:
            conn.disconnect(str(err))
            return
        conn.address = address
        conn.gateway_secure = "secure" in options and peer.is_secure(conn.tls, gateway_address)
        log.info(
            "irc WEBIRC from gateway {gateway} ({gateway_address}): client {address}{secure}",
            gateway=entry.name,
            gateway_address=gateway_address,
            address=address,
            secure=" (secure)" if conn.gateway_secure else "",
        )

    def refused(failure: Failure) -> None:
        failure.trap(OperatorRefused, AccountError)
        log.info("irc WEBIRC refused from {address}: wrong password", address=conn.address)
        conn.disconnect("WEBIRC: wrong gateway name or password")

    return d.addCallbacks(accepted, refused)
