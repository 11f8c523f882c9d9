"""Storage backends behind IAccountStore, IRoomStore and IHistoryStore."""

from chatserver.storage.sqlite import SchemaTooNew, SqliteStore, StoreClosed, StoreUnusable

__all__ = ["SchemaTooNew", "SqliteStore", "StoreClosed", "StoreUnusable"]
