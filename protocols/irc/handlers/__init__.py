"""IRC command handlers.  Importing this package imports every module in it, so a new handler
module registers its commands (and services, capabilities) just by being here."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
