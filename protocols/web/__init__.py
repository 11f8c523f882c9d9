"""The HTTP listener: WebSocket endpoints for IRC, XMPP and line chat, and the web client."""
