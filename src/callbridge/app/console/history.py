"""One page of ``GET /api/calls``: live calls from memory merged with the store's, paged in SQL.

The store is the listing's source of truth (order, paging, total); a call still in memory is told as
memory has it (the store may lag behind it by a write). A live call whose first save is still queued is
not in the store yet: it is the newest of all, so it heads the first page and shifts the SQL offset.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...call.call import Call
from ..http_context import LiveCalls
from ..store.search import CallFilter
from .callquery import CallQuery


class SearchableRecords(Protocol):
    """The store's reads a history page needs (AsyncCallStore)."""

    async def search_call_records(self, where: CallFilter, *, limit: int = ...,
                                  offset: int = ...) -> tuple[list[dict[str, Any]], int]: ...

    async def stored_ids(self, ids: list[str]) -> set[str]: ...

    async def find_by_sip_call_id(self, sip_call_id: str) -> dict[str, Any] | None: ...


def _summary(call: Call) -> dict[str, Any]:
    """What a filter reads, without copying the call's events and transcript."""
    return {"caller": call.caller, "called": call.called, "status": call.status.value,
            "end_reason": None if call.end_reason is None else call.end_reason.value,
            "direction": call.direction.value, "worker": call.worker, "created_at": call.created_at}


async def call_page(calls: LiveCalls, store: SearchableRecords | None, query: CallQuery) -> dict[str, Any]:
    where, limit, offset = query.where, query.limit, query.offset
    live = [c for c in sorted(calls.calls.values(), key=lambda c: c.created_at, reverse=True)
            if where.matches(_summary(c)) and (query.sip_call_id is None or c.sip_call_id == query.sip_call_id)]
    if query.sip_call_id is not None:
        records = [c.to_record() for c in live]
        if store is not None:
            found = await store.find_by_sip_call_id(query.sip_call_id)
            if found is not None and found["id"] not in calls.calls and where.matches(found):
                records.append(found)
        return _page(records[offset:offset + limit], len(records), query)
    if store is None:
        return _page([c.to_record() for c in live[offset:offset + limit]], len(live), query)
    stored_ids = await store.stored_ids([c.id for c in live]) if live else set()
    unsaved = [c for c in live if c.id not in stored_ids]
    first = [c.to_record() for c in unsaved[offset:offset + limit]]
    stored, total = await store.search_call_records(where, limit=limit - len(first),
                                                    offset=max(offset - len(unsaved), 0))
    # A call saved between the two reads would be on the page twice: once as live, once as stored.
    listed = {record["id"] for record in first}
    saved_since = sum(r["id"] in listed for r in stored)
    records = first + [call.to_record() if (call := calls.calls.get(r["id"])) is not None else r
                       for r in stored if r["id"] not in listed]
    return _page(records, total + len(unsaved) - saved_since, query)


def _page(records: list[dict[str, Any]], total: int, query: CallQuery) -> dict[str, Any]:
    return {"calls": records, "total": total, "limit": query.limit, "offset": query.offset}


__all__ = ["SearchableRecords", "call_page"]
