"""Cluster mode: several chatserver processes share users and rooms through Redis.

``link`` keeps a connection to Redis; ``ops`` is what one node tells the others; ``node``
claims nicks, publishes this process's users' actions and applies the other nodes' to the
local core through stand-in connections (``remote``); ``shared`` is what else it shares
(rooms' whole state, accounts, server bans, tags, redactions, renames, metadata).
"""
