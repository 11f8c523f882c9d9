"""Authentication shared by every protocol: the SASL mechanisms (PLAIN, SCRAM) and the
operator check.

Protocols only frame what these modules decide: IRC carries SASL in AUTHENTICATE lines, XMPP
in ``<auth>``/``<challenge>``/``<response>``/``<success>``; each maps a :class:`sasl.Failure`
to its own reply.  Accounts, credentials and the login throttle are the core's
(:class:`chatserver.core.accounts.AccountManager`).
"""
