"""IRC: the protocol IRC clients and bots speak, with IRCv3, SASL and services.

``factory.IrcFactory`` is the listener's factory; ``connection.IrcConnection`` one client;
``commands`` the command table that the modules in ``handlers`` fill.
"""
