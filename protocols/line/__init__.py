"""Line chat: telnet, netcat and scripts, in text lines or JSON Lines (see README.md)."""
