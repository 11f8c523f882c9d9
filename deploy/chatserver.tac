"""Run chatserver under twistd:  CHATSERVER_CONFIG=chatserver.toml twistd -ny deploy/chatserver.tac

CHATSERVER_CONFIG names the TOML file (unset: built-in defaults); CHATSERVER_DATA_DIR, when set,
replaces [server] data_dir.  twistd handles logging, daemonizing and stop signals; SIGHUP
reloads the configuration as under `chatserver run`, which is the simpler way and the one the
systemd unit and the container use.
"""

import os

from twisted.application import service
from twisted.internet import reactor

from chatserver.server.app import build_service
from chatserver.server.collector import freeze_startup_heap
from chatserver.config import load_config
from chatserver.server.reload import install_sighup

config = load_config(
    os.environ.get("CHATSERVER_CONFIG") or None,
    data_dir_override=os.environ.get("CHATSERVER_DATA_DIR") or None,
)
application = service.Application("chatserver")
server = build_service(config)
server.setServiceParent(application)
# Full collections skip what start-up built (see chatserver/server/collector.py).
server.when_ready().addCallbacks(lambda _: freeze_startup_heap(), lambda _: None)
reactor.callWhenRunning(install_sighup, reactor, server)
