"""GET /api/calls while a live call's first save lands between the page's two reads (app/console/history.py).

The page asks the store which live calls it has, then reads the stored page. A call saved in between
was listed twice, as live and as stored: in a cluster test that read two live calls where there was one.
"""

from __future__ import annotations

from types import SimpleNamespace

from callbridge.app.console.callquery import parse_call_query
from callbridge.app.console.history import call_page
from callbridge.app.store import AsyncCallStore, CallStore
from callbridge.call.call import Call, CallStatus, Leg
from tests.unit.test_callstore import call_record


class SavedBetweenReads:
    """The real store, but the live call's first save lands just after ``stored_ids`` answered."""

    def __init__(self, store: AsyncCallStore, call: Call) -> None:
        self._store, self._call = store, call

    async def stored_ids(self, ids: list[str]) -> set[str]:
        answer = await self._store.stored_ids(ids)
        await self._store.save_call(self._call.to_record())
        return answer

    def __getattr__(self, name: str):
        return getattr(self._store, name)


async def test_a_call_saved_between_the_two_reads_is_listed_once(tmp_path):
    store = AsyncCallStore(CallStore.open(f"sqlite:///{tmp_path / 'calls.db'}", tmp_path))
    try:
        for index in range(3):
            await store.save_call(call_record(f"old{index}", status="hangup", end_reason="caller_hangup",
                                              created_at=1000.0 + index, ended_at=1010.0 + index))
        live = Call(direction="inbound", leg=Leg(session=SimpleNamespace(call_id="sip-live")),
                    status=CallStatus.ACTIVE)
        calls = SimpleNamespace(calls={live.id: live})
        page = await call_page(calls, SavedBetweenReads(store, live), parse_call_query({}))
        assert [c["id"] for c in page["calls"]] == [live.id, "old2", "old1", "old0"]
        assert page["total"] == 4
        # And once saved, the next page agrees.
        again = await call_page(calls, store, parse_call_query({}))
        assert ([c["id"] for c in again["calls"]], again["total"]) == ([live.id, "old2", "old1", "old0"], 4)
    finally:
        await store.close()
