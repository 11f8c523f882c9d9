"""WEBIRC: a web gateway (The Lounge, Kiwi IRC's webircgateway) says whom it connects for.

``WEBIRC <password> <gateway> <hostname> <ip> [:<options>]``, before registration.  Only a
connection from one of the gateway's ``hosts`` in ``[[webirc]]`` may send it, and only with
that gateway's password; the connection then counts as coming from ``ip``: server bans, the
per-address limit and the cloaked host all follow the user's own address instead of the
gateway's.  Any failure closes the connection (the IRCv3 WEBIRC rule): a gateway that
misconfigured its password must not quietly put every user under its own address.
The password check is the operators' one (same cost for a wrong name or password, and the
same per-address login throttle).
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


@command("WEBIRC", min_params=4, pre_registration=True)
def webirc(conn: IrcConnection, msg: Any) -> Deferred[Any] | None:
    if conn.registered or conn.pending_nick is not None or conn.ident is not None:
        # The address must be settled before anything is done under it.
        conn.reply(n.ERR_ALREADYREGISTERED, "WEBIRC must come before NICK and USER")
        return None
    password, gateway, _hostname, claimed = msg.params[:4]
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
        log.info(
            "irc WEBIRC from gateway {gateway} ({gateway_address}): client {address}",
            gateway=entry.name,
            gateway_address=gateway_address,
            address=address,
        )

    def refused(failure: Failure) -> None:
        failure.trap(OperatorRefused, AccountError)
        log.info("irc WEBIRC refused from {address}: wrong password", address=conn.address)
        conn.disconnect("WEBIRC: wrong gateway name or password")

    return d.addCallbacks(accepted, refused)
