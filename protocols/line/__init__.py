"""Line chat: telnet, netcat and scripts, in text lines or JSON Lines (see README.md).

``factory.LineFactory`` is the listener's factory; ``connection.LineConnection`` one client;
``commands`` the command table that the modules in ``handlers`` fill; ``render`` what users
see (events, and the views that command replies show).
"""
