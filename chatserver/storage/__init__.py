"""Storage backends behind IAccountStore, IRoomStore and IHistoryStore."""

from typing import Any

__all__ = ["SchemaTooNew", "SqliteStore", "StoreClosed", "StoreUnusable"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the history writer process imports this package's row code
    # alone, without Twisted and the core.
    if name in __all__:
        from chatserver.storage import sqlite

        return getattr(sqlite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
