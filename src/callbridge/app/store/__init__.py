"""Durable call records: calls, their events and transcripts, trunks, and the webhook outbox.

    store = AsyncCallStore(CallStore.open(config_url_or_None, data_dir))
"""

from .callstore import AsyncCallStore, CallStore, StoreClosed, database_url

__all__ = ["AsyncCallStore", "CallStore", "StoreClosed", "database_url"]
