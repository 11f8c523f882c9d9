"""XMPP (RFC 6120/6121) client-to-server front door to the chat core.

Layers, bottom up: ``stream`` (incremental, restricted XML parsing and limits), ``connection``
(stream negotiation: STARTTLS, ``sasl``, ``bind``), ``router`` (the handler table by stanza
kind, type and namespace), the handler modules (``roster``, ``presence``, ``im``, ``disco``,
``ping``, ``version``, ``register``; multi-user chat in the ``muc`` package) and ``render``
(core events as stanzas).  ``factory`` imports every handler module so the table is complete.
"""
