"""CallStore and AsyncCallStore on SQLite and a real throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from callbridge.app.store import AsyncCallStore, CallStore, StoreClosed, database_url as resolve_url
from callbridge.app.store.schema import metadata
from tests.support import postgres

database_url, postgres_cluster = postgres.database_url, postgres.postgres_cluster  # fixtures

VERSION_TABLE = "callbridge_alembic_version"


@pytest.fixture
def store(database_url, tmp_path):
    opened = CallStore.open(database_url, tmp_path)
    yield opened
    opened.close()


def call_record(call_id: str = "call-1", **changes) -> dict:
    """The shape Call.to_record() produces."""
    record = {
        "id": call_id,
        "direction": "inbound",
        "sip_call_id": f"{call_id}@pbx.example",
        "status": "active",
        "end_reason": None,
        "caller": "+15550100001",
        "caller_name": "Zoë Ångström",
        "called": "+15550100000",
        "trunk": "twilio",
        "sip_headers": {"X-Account": "42", "User-Agent": "PBX/1.0"},
        "created_at": 1718000000.123456789,
        "answered_at": 1718000001.1 + 0.2,  # a float with no short decimal form
        "ended_at": None,
        "events": [],
        "dtmf": [{"digit": "5", "source": "rfc4733", "at": 1718000002.5, "duration_ms": 120.0}],
        "recording": "recordings/call-1.wav",
        "route": "support",
        "ivr": [{"node": "menu", "digits": "5"}],
        "handoff": {"intent": "orders", "slots": {"order": "A-17"}},
        "transcript": [],
        "media": {"codec": "PCMU", "packets_in": 1234, "jitter_ms": 3.25},
        "worker": "worker-a",
    }
    record.update(changes)
    return record


def test_open_migrates_to_head_and_reopens(database_url, tmp_path):
    first = CallStore.open(database_url, tmp_path)
    first.save_call(call_record())
    first.close()
    again = CallStore.open(database_url, tmp_path)  # migrating an up-to-date database is a no-op
    try:
        assert again.get_call("call-1")["caller"] == "+15550100001"
        with again.engine.connect() as connection:
            assert connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0002"
    finally:
        again.close()


def test_a_0001_database_upgrades_and_keeps_its_calls(database_url, tmp_path):
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from callbridge.app.store.engine import MIGRATIONS_DIR, create_engine

    engine = create_engine(resolve_url(database_url, tmp_path))
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(sa.text("INSERT INTO calls (id, direction, status, created_at, extra, updated_at) "
                                   "VALUES ('old-1', 'inbound', 'hangup', 1.5, '{}', 2.5)"))
    engine.dispose()
    store = CallStore.open(database_url, tmp_path)  # migrates 0001 -> 0002
    try:
        old = store.get_call("old-1")
        assert old["status"] == "hangup" and old["worker"] is None
        store.save_call(call_record("new-1"))
        assert store.get_call("new-1")["worker"] == "worker-a"
    finally:
        store.close()


def test_migration_creates_exactly_the_schema(store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []


def test_urls_map_to_psycopg3_and_sqlite_in_data_dir(tmp_path):
    assert resolve_url("postgresql://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"
    assert resolve_url("postgres://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"
    assert resolve_url(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/callbridge.db"


def test_sqlite_is_wal_with_full_sync(tmp_path):
    store = CallStore.open(None, tmp_path / "fresh")
    try:
        assert (tmp_path / "fresh" / "callbridge.db").exists()
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        store.close()


def test_call_record_round_trips_exactly(store):
    record = call_record()
    store.save_call(record)
    saved = store.get_call("call-1")
    assert saved == record
    assert saved["created_at"] == 1718000000.123456789 and saved["answered_at"] == 1718000001.1 + 0.2


def test_save_call_is_an_upsert(store):
    store.save_call(call_record())
    store.save_call(call_record(status="hangup", end_reason="caller hung up", ended_at=1718000060.75,
                                handoff=None))
    saved = store.get_call("call-1")
    assert (saved["status"], saved["end_reason"], saved["ended_at"], saved["handoff"]) == (
        "hangup", "caller hung up", 1718000060.75, None)
    assert len(store.list_calls()) == 1


def test_events_are_numbered_per_call_and_rebuilt_in_order(store):
    # The first events of a call come before its first save.
    assert store.append_event("call-1", "ringing", {}, 10.5) == 1
    assert store.append_event("call-2", "ringing", {}, 11.0) == 1
    assert store.append_event("call-1", "dtmf", {"digit": "5", "source": "info"}, 12.25) == 2
    assert store.append_event("call-1", "status", {"status": "active"}, 13.0) == 3
    store.save_call(call_record(events=[{"ignored": True}]))  # the event log is the events table
    assert store.get_call("call-1")["events"] == [
        {"at": 10.5, "type": "ringing"},
        {"at": 12.25, "type": "dtmf", "digit": "5", "source": "info"},
        {"at": 13.0, "type": "status", "status": "active"},
    ]
    assert [e["seq"] for e in store.list_events("call-1", after_seq=1)] == [2, 3]
    assert store.list_events("call-1", after_seq=2) == [
        {"seq": 3, "at": 13.0, "type": "status", "data": {"status": "active"}}]


def test_transcript_appends_and_save_call_amends_it(store):
    said = {"role": "user", "text": "where is my order", "at": 20.5}
    answer = {"role": "agent", "text": "It shipped.", "turn_id": "t1", "at": 21.0}
    store.append_transcript("call-1", said)
    store.append_transcript("call-1", answer)
    store.save_call(call_record())  # an empty list in the record removes nothing
    assert store.get_call("call-1")["transcript"] == [said, answer]
    # The agent adds timing to an entry after logging it, then one more entry.
    amended = {**answer, "latency_ms": 420.5, "interrupted": False}
    later = {"role": "user", "text": "thanks"}
    store.save_call(call_record(transcript=[said, amended, later]))
    assert store.get_call("call-1")["transcript"] == [said, amended, later]


def test_find_by_sip_call_id(store):
    store.save_call(call_record("a", sip_call_id="x@pbx", created_at=1.0))
    store.save_call(call_record("b", sip_call_id="y@pbx", created_at=2.0))
    assert store.find_by_sip_call_id("y@pbx")["id"] == "b"
    assert store.find_by_sip_call_id("nobody@pbx") is None
    assert store.get_call("nobody") is None


def test_list_calls_newest_first_with_paging_and_status(store):
    for n in range(5):
        store.save_call(call_record(f"c{n}", created_at=1000.0 + n, status="hangup" if n % 2 else "active"))
    listed = store.list_calls()
    assert [c["id"] for c in listed] == ["c4", "c3", "c2", "c1", "c0"]
    assert "events" not in listed[0] and "sip_headers" not in listed[0]
    assert listed[0]["created_at"] == 1004.0 and listed[0]["caller"] == "+15550100001"
    assert [c["id"] for c in store.list_calls(limit=2, offset=1)] == ["c3", "c2"]
    assert [c["id"] for c in store.list_calls(status="hangup")] == ["c3", "c1"]
    # Paging out of range is clamped, never an error a web handler could turn into a 500.
    assert store.list_calls(limit=0) == [] and store.list_calls(limit=-3) == []
    assert [c["id"] for c in store.list_calls(limit=10**9, offset=-1)] == ["c4", "c3", "c2", "c1", "c0"]


def test_trunks_save_list_delete(store):
    store.save_trunk("inbound", "twilio", {"numbers": ["+15550100000"], "auth": {"username": "u"}})
    store.save_trunk("outbound", "telnyx", {"address": "sip.telnyx.com"})
    store.save_trunk("inbound", "twilio", {"numbers": ["+15550100009"]})  # replaces
    inbound = store.list_trunks("inbound")
    assert [(t["kind"], t["id"], t["config"]) for t in inbound] == [
        ("inbound", "twilio", {"numbers": ["+15550100009"]})]
    assert [t["id"] for t in store.list_trunks()] == ["twilio", "telnyx"]
    assert store.delete_trunk("inbound", "twilio") is True
    assert store.delete_trunk("inbound", "twilio") is False
    assert [t["id"] for t in store.list_trunks()] == ["telnyx"]


def test_odd_values_are_stored_not_fatal(store):
    with pytest.raises(ValueError, match="id"):
        store.save_call({"status": "active"})
    record = call_record(handoff={"path": Path("/tmp/x"), "score": float("nan"), "ok": True})
    store.save_call(record)
    assert store.get_call("call-1")["handoff"] == {"path": "/tmp/x", "score": None, "ok": True}
    assert store.append_event("call-1", "weird", {"value": float("inf"), "obj": object.__name__}, 1.0) == 1


def test_outbox_rows_and_claims(store):
    first = store.outbox_add("http://127.0.0.1:1/hook", "call.ended", {"id": "c1"}, now=100.0)
    second = store.outbox_add("http://127.0.0.1:1/hook", "call.started", {"id": "c2"}, now=101.0)
    assert store.outbox_next_due() == 100.0
    assert [r["id"] for r in store.outbox_due(100.5, 10)] == [first]
    row = store.outbox_due(100.5, 10)[0]
    assert store.outbox_claim(first, row["next_attempt_at"], 200.0) is True
    assert store.outbox_claim(first, row["next_attempt_at"], 200.0) is False  # already taken
    store.outbox_retry(first, "HTTP 503", 150.0)
    assert store.get_outbox(first) == {
        "id": first, "url": "http://127.0.0.1:1/hook", "event": "call.ended", "payload": {"id": "c1"},
        "created_at": 100.0, "attempts": 1, "next_attempt_at": 150.0, "delivered_at": None, "failed_at": None,
        "last_error": "HTTP 503"}
    store.outbox_delivered(second, 102.0)
    store.outbox_failed(first, "gave up", 151.0)
    assert store.outbox_next_due() is None and store.outbox_due(1e12, 10) == []
    assert store.get_outbox(second)["delivered_at"] == 102.0
    assert store.get_outbox(first)["failed_at"] == 151.0
    assert store.list_outbox(pending_only=True) == []


# The child logs events as fast as it can and prints each seq once its commit returned.
APPENDER = """
import sys, time
from pathlib import Path
from callbridge.app.store import CallStore
store = CallStore.open(sys.argv[1] or None, Path(sys.argv[2]))
n = 0
while True:
    n += 1
    seq = store.append_event("doomed", "tick", {"n": n}, time.time())
    print(seq, flush=True)
"""
PRINTED_BEFORE_KILL = 100
CHILD_TIMEOUT_S = 30


def test_kill_9_keeps_every_committed_event(database_url, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", APPENDER, database_url or "", str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(CHILD_TIMEOUT_S, child.kill)
    watchdog.start()
    try:
        printed = []
        for line in child.stdout:
            printed.append(int(line))
            if len(printed) == PRINTED_BEFORE_KILL:
                os.kill(child.pid, signal.SIGKILL)  # mid-loop: very likely mid-transaction
                break
        printed += [int(line) for line in child.stdout]  # whatever it printed before dying
        child.wait()
    finally:
        watchdog.cancel()
    assert child.returncode == -signal.SIGKILL, child.stderr.read()
    assert len(printed) >= PRINTED_BEFORE_KILL

    reopened = CallStore.open(database_url, tmp_path)
    try:
        stored = [event["seq"] for event in reopened.list_events("doomed")]
        assert set(printed) <= set(stored)
        # Nothing torn: the log is 1..n, at most one commit ahead of the last print.
        assert stored == list(range(1, len(stored) + 1))
        assert len(stored) - max(printed) <= 1
        if database_url is None:
            with reopened.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    finally:
        reopened.close()


async def test_async_writes_are_ordered_and_committed_when_awaited(database_url, tmp_path):
    store = AsyncCallStore(CallStore.open(database_url, tmp_path))
    other = CallStore.open(database_url, tmp_path)  # a separate connection sees only commits
    try:
        seqs = await asyncio.gather(*(store.append_event("c", "tick", {"i": i}, float(i)) for i in range(40)))
        assert seqs == list(range(1, 41))  # calls run in the order they were made
        assert [e["data"]["i"] for e in other.list_events("c")] == list(range(40))
        await store.save_call(call_record("c"))
        await store.append_transcript("c", {"role": "user", "text": "hi", "at": 5.0})
        assert other.get_call("c")["transcript"] == [{"role": "user", "text": "hi", "at": 5.0}]
        assert (await store.get_call("c"))["events"][0] == {"at": 0.0, "type": "tick", "i": 0}
        assert (await store.find_by_sip_call_id("c@pbx.example"))["id"] == "c"
        assert [c["id"] for c in await store.list_calls(status="active")] == ["c"]
        assert [e["seq"] for e in await store.list_events("c", after_seq=38)] == [39, 40]
        await store.save_trunk("inbound", "t", {"a": 1})
        assert [t["id"] for t in await store.list_trunks()] == ["t"]
        assert await store.delete_trunk("inbound", "t") is True
    finally:
        other.close()
        await store.close()


async def test_async_errors_reach_the_caller_and_the_writer_carries_on(tmp_path):
    store = AsyncCallStore(CallStore.open(None, tmp_path))
    try:
        with pytest.raises(ValueError, match="id"):
            await store.save_call({"status": "active"})
        assert await store.append_event("c", "ok", {}, 1.0) == 1
    finally:
        await store.close()


async def test_async_close_drains_queued_writes(tmp_path):
    store = AsyncCallStore(CallStore.open(None, tmp_path))
    writes = [asyncio.create_task(store.append_event("c", "tick", {"i": i}, float(i))) for i in range(100)]
    await asyncio.sleep(0)  # every task queues its write
    writes[-1].cancel()  # a caller that gives up does not take its write back
    await store.close()
    assert [w.result() for w in writes[:-1]] == list(range(1, 100))
    with pytest.raises(StoreClosed):
        await store.append_event("c", "late", {}, 0.0)
    reopened = CallStore.open(None, tmp_path)
    try:
        assert [e["seq"] for e in reopened.list_events("c")] == list(range(1, 101))
    finally:
        reopened.close()


async def test_reads_do_not_wait_behind_the_writer(tmp_path):
    store = AsyncCallStore(CallStore.open(None, tmp_path))
    try:
        await store.save_call(call_record("c"))
        started = time.monotonic()
        # A slow write holds the writer thread; a read in another thread still answers.
        slow = asyncio.create_task(store._write(time.sleep, 0.5))
        await asyncio.sleep(0)
        assert (await store.get_call("c"))["id"] == "c"
        assert time.monotonic() - started < 0.4
        await slow
    finally:
        await store.close()


def saved_calls(store: CallStore) -> list[dict]:
    """Five calls as the API would read them back, newest first: events and transcripts of
    different lengths (none at all for one), and the odd values JSON columns keep exact."""
    expected = []
    for n in range(5):
        call_id = f"c{n}"
        said = [{"role": "user", "text": f"said {i}", "at": 1718000000.1 + i * 0.3} for i in range(n % 3)]
        for entry in said:
            store.append_transcript(call_id, entry)
        events = [{"at": 1718000000.0 + n + i / 7, "type": f"e{i}", "n": i, "deep": {"x": [i, None]}}
                  for i in range(n)]
        for event in events:
            store.append_event(call_id, event["type"], {k: v for k, v in event.items() if k not in ("at", "type")},
                               event["at"])
        record = call_record(call_id, created_at=1000.0 + n + 1 / 3, status="hangup" if n % 2 else "active",
                             transcript=said)
        store.save_call(record)
        expected.append({**record, "events": events})
    return expected[::-1]


def test_list_call_records_are_whole_records_in_one_statement(store):
    expected = saved_calls(store)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        listed = store.list_call_records(limit=50)
        assert len(statements) == 1
        assert statements[0].lstrip().upper().startswith(("WITH", "SELECT"))
        assert listed == expected  # exactly what was saved, floats included
        assert store.list_call_records(limit=2, offset=1) == expected[1:3]
        assert store.list_call_records(status="hangup") == [r for r in expected if r["status"] == "hangup"]
        assert store.list_call_records(limit=0) == [] and store.list_call_records(limit=-1, offset=-5) == []
        assert [r["id"] for r in store.list_call_records(limit=10**9, offset=-1)] == ["c4", "c3", "c2", "c1", "c0"]
        assert [r["id"] for r in store.list_call_records(offset=4)] == ["c0"]
        assert store.list_call_records(status="nonexistent") == []
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)
    # The same records get_call reads one at a time.
    assert listed == [store.get_call(r["id"]) for r in expected]


def test_a_cluster_workers_calls_and_the_unfinished_ones(store):
    store.save_call(call_record("a1", worker="w1", status="active", created_at=1.0))
    store.save_call(call_record("a2", worker="w1", status="hangup", created_at=2.0))
    store.save_call(call_record("b1", worker="w2", status="ringing", created_at=3.0))
    store.save_call(call_record("solo", worker=None, status="active", created_at=4.0))
    assert [r["id"] for r in store.list_call_records(worker="w1")] == ["a2", "a1"]
    assert [r["id"] for r in store.list_call_records(worker="w1", status="active")] == ["a1"]
    assert store.list_call_records(worker="nobody") == []
    assert store.unfinished_calls("w1") == ["a1"] and store.unfinished_calls("w2") == ["b1"]
    assert store.unfinished_workers() == ["w1", "w2"]  # a call of no worker is no cluster's to end
