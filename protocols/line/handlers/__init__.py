"""Line-chat command handlers, one module per group of commands.

Each module registers its commands in :data:`protocols.line.commands.COMMANDS`.  They are
imported in this order because ``/help`` lists the commands in the order they registered;
a module missing from the list is an error at import, so a new one cannot be forgotten.
"""

from __future__ import annotations

import importlib
import pkgutil

ORDER = ("identity", "rooms", "talking", "moderation", "operators", "session")

_found = {module.name for module in pkgutil.iter_modules(__path__)}
if _found != set(ORDER):
    raise ImportError(f"line-chat handler modules not in ORDER: {sorted(_found ^ set(ORDER))}")
for _name in ORDER:
    importlib.import_module(f"{__name__}.{_name}")
