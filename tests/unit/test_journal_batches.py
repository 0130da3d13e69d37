"""The journal writes events that queue up together in one transaction, in order, before SSE sees them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from callbridge.app.events import EventBus
from callbridge.app.journal import CallJournal
from callbridge.app.store import AsyncCallStore, CallStore
from callbridge.call import events as ev
from callbridge.call.call import Call, CallStatus, Leg

DIGITS = "0123456789*#"


class CountingStore(AsyncCallStore):
    """The real SQLite store, counting the transactions events took."""

    def __init__(self, store: CallStore) -> None:
        super().__init__(store)
        self.event_transactions = 0

    async def append_events(self, events):
        self.event_transactions += 1
        return await super().append_events(events)


def new_call(sip_id: str) -> Call:
    return Call(direction="inbound", leg=Leg(SimpleNamespace(call_id=sip_id)))


async def test_a_burst_of_events_from_two_calls_is_stored_in_few_transactions_in_order(tmp_path):
    store = CountingStore(CallStore.open(None, tmp_path))
    bus = EventBus()
    watcher = bus.subscribe()
    journal = CallJournal(bus, store=store)
    journal.start()
    calls = [new_call("a"), new_call("b")]
    try:
        for call in calls:
            call.consumers.append(journal)
            call.publish(ev.StatusChanged(status=CallStatus.RINGING))
        for digit in DIGITS * 5:  # 60 keys each, interleaved: a busy menu
            for call in calls:
                call.publish(ev.DtmfReceived(digit=digit, source="rfc4733"))
        await asyncio.wait_for(journal.close(), 10)
        seen = []
        while not watcher.queue.empty():
            event = watcher.queue.get_nowait()
            assert event is not None
            seen.append(event)
    finally:
        await store.close()
    total = 2 * (1 + len(DIGITS) * 5)
    assert len(seen) == total
    # The bus saw each call's events in its order, numbered as the store numbered them.
    for call in calls:
        mine = [e for e in seen if e.call_id == call.id]
        assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
        assert [e.data.get("digit") for e in mine[1:]] == list(DIGITS * 5)
        stored = CallStore.open(None, tmp_path).list_events(call.id)
        assert [(row["seq"], row["type"]) for row in stored] == [(e.seq, e.type) for e in mine]
    # Events that arrive together share a transaction (one commit, one WAL fsync): far fewer than events.
    assert store.event_transactions <= total // 10, store.event_transactions


async def test_events_and_record_saves_keep_their_order(tmp_path):
    store = AsyncCallStore(CallStore.open(None, tmp_path))
    bus = EventBus()
    journal = CallJournal(bus, store=store)
    journal.start()
    call = new_call("c")
    call.consumers.append(journal)
    try:
        call.publish(ev.StatusChanged(status=CallStatus.RINGING))  # a save, then its event
        call.publish(ev.DtmfReceived(digit="1", source="rfc4733"))
        call.publish(ev.StatusChanged(status=CallStatus.ACTIVE))  # a save between events
        call.publish(ev.DtmfReceived(digit="2", source="rfc4733"))
        await asyncio.wait_for(journal.close(), 10)
        record = await store.get_call(call.id)
    finally:
        await store.close()
    assert record is not None and record["status"] == "active"
    assert [e["type"] for e in record["events"]] == ["status", "dtmf", "status", "dtmf"]
