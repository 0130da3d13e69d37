"""Durable call records on SQLite (the default) or PostgreSQL.

CallStore is the synchronous core: every write is its own committed transaction,
so a call's events survive a kill -9 of the process the moment the method
returns. AsyncCallStore puts one writer thread in front of it for the asyncio
app: writes are queued in order and their futures resolve after the commit.

SQLite runs in WAL mode with synchronous=FULL (engine.py): a commit returns only
after the WAL is fsynced, so it also survives a power cut.

About 600 lines: one class per side (sync core, async front) over the
same five tables; the webhook outbox's few methods live with the rest because
they share the engine and the one writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from callbridge.offload import run_store

from .engine import create_engine, database_url, migrate, normalised, upsert
from .search import CallFilter
from .schema import CALL_COLUMNS, LOGGED_FIELDS, call_events, calls, transcripts, trunks, webhook_outbox

log = logging.getLogger(__name__)

# Per-call sequence numbers are max+1; two writers on one PostgreSQL database can
# race for the same number, and the loser simply takes the next one.
SEQ_CONFLICT_RETRIES = 5
MAX_LIST_LIMIT = 1000
# The rows of a whole-records read, in the order each call's rows come back.
HEADER_ROW, EVENT_ROW, TRANSCRIPT_ROW = 0, 1, 2
# Statuses of a call that has not ended (call/events.py CallStatus, all but hangup).
UNFINISHED_STATUSES = ("dialing", "ringing", "active")
# The overview's window reads at most this many calls (and their latency events).
MAX_RECENT_CALLS = 5000
LATENCY_EVENT = "latency"  # call/events.py TurnLatency.TYPE: one per agent turn, with "total" in ms


# One event for append_events: (call_id, type, data, at).
EventRow = tuple[str, str, dict[str, Any], float]


class StoreClosed(RuntimeError):
    """A write reached an AsyncCallStore after close()."""


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class CallStore:
    """Call records, their event and transcript logs, trunks and the webhook outbox.

    Each method is one transaction, committed before it returns. Writes are meant
    for one thread (AsyncCallStore's writer); reads may come from any thread.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def open(cls, url: str | None, data_dir: Path) -> "CallStore":
        """Connect (None: SQLite in data_dir) and migrate the schema to the newest revision."""
        if url is None:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url(url, data_dir))
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # -- calls -----------------------------------------------------------------

    def save_call(self, record: dict[str, Any]) -> None:
        """Insert or update the call record["id"] (the shape of Call.to_record()).

        record["events"] is not stored: events live in call_events (append_event).
        record["transcript"] is authoritative by position: entry i is transcript
        row seq i+1, so entries the agent amended after append_transcript (turn
        timing, interruptions) are updated, and entries never appended are added.
        """
        call_id = record.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ValueError("save_call: the record needs a non-empty string 'id'")
        row = {name: record.get(name) for name in CALL_COLUMNS}
        if _number(row["created_at"]) is None:
            row["created_at"] = time.time()
        row["extra"] = {k: v for k, v in record.items() if k not in CALL_COLUMNS and k not in LOGGED_FIELDS}
        row["updated_at"] = time.time()
        transcript = record.get("transcript")
        with self._engine.begin() as connection:
            upsert(connection, calls, row, ["id"])
            if isinstance(transcript, list):
                self._sync_transcript(connection, call_id, transcript)

    def _sync_transcript(self, connection: Connection, call_id: str, entries: list[Any]) -> None:
        stored = {
            seq: entry
            for seq, entry in connection.execute(
                sa.select(transcripts.c.seq, transcripts.c.entry).where(transcripts.c.call_id == call_id)
            )
        }
        for seq, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                entry = {"text": str(entry)}
            if seq not in stored:
                connection.execute(
                    transcripts.insert().values(call_id=call_id, seq=seq, **self._transcript_columns(entry)))
            elif stored[seq] != normalised(entry):
                connection.execute(
                    transcripts.update()
                    .where(transcripts.c.call_id == call_id, transcripts.c.seq == seq)
                    .values(**self._transcript_columns(entry))
                )

    @staticmethod
    def _transcript_columns(entry: dict[str, Any]) -> dict[str, Any]:
        at = _number(entry.get("at"))
        role = entry.get("role")
        return {"at": time.time() if at is None else at, "role": None if role is None else str(role), "entry": entry}

    def _append_numbered(self, table: sa.Table, call_id: str, values: dict[str, Any]) -> int:
        for attempt in range(SEQ_CONFLICT_RETRIES):
            try:
                with self._engine.begin() as connection:
                    seq = connection.execute(
                        sa.select(sa.func.coalesce(sa.func.max(table.c.seq), 0) + 1).where(table.c.call_id == call_id)
                    ).scalar_one()
                    connection.execute(table.insert().values(call_id=call_id, seq=seq, **values))
                return int(seq)
            except IntegrityError:
                if attempt == SEQ_CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def append_event(self, call_id: str, type: str, data: dict[str, Any], at: float) -> int:
        """Log one event of a call in its own committed transaction; returns its seq (1, 2, ... per call)."""
        return self._append_numbered(call_events, call_id, {"at": at, "type": type, "data": dict(data or {})})

    def append_events(self, events: list[EventRow]) -> list[int]:
        """Log several events, of one call or many, in one committed transaction; returns their seqs.

        The journal hands over what queued up while the previous commit ran: one transaction (one WAL
        fsync) for a batch instead of one per event, which is most of what a busy IVR caller costs."""
        for attempt in range(SEQ_CONFLICT_RETRIES):
            try:
                with self._engine.begin() as connection:
                    next_seq: dict[str, int] = {}
                    for call_id in dict.fromkeys(call_id for call_id, *_ in events):
                        next_seq[call_id] = int(connection.execute(
                            sa.select(sa.func.coalesce(sa.func.max(call_events.c.seq), 0) + 1)
                            .where(call_events.c.call_id == call_id)).scalar_one())
                    rows, seqs = [], []
                    for call_id, type, data, at in events:
                        seq = next_seq[call_id]
                        next_seq[call_id] = seq + 1
                        seqs.append(seq)
                        rows.append({"call_id": call_id, "seq": seq, "at": at, "type": type,
                                     "data": dict(data or {})})
                    if rows:
                        connection.execute(call_events.insert(), rows)
                return seqs
            except IntegrityError:  # another writer (a cluster's reaper) took a number first
                if attempt == SEQ_CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def append_transcript(self, call_id: str, entry: dict[str, Any]) -> None:
        """Log one transcript entry ({"role", "text", "at", ...}) of a call."""
        self._append_numbered(transcripts, call_id, self._transcript_columns(dict(entry)))

    def list_events(self, call_id: str, *, after_seq: int = 0) -> list[dict[str, Any]]:
        """Events with seq > after_seq as {"seq", "at", "type", "data"}: replay for a reconnecting listener."""
        query = (
            sa.select(call_events.c.seq, call_events.c.at, call_events.c.type, call_events.c.data)
            .where(call_events.c.call_id == call_id, call_events.c.seq > after_seq)
            .order_by(call_events.c.seq)
        )
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        records = self._records(sa.select(calls).where(calls.c.id == call_id))
        return records[0] if records else None

    def _records(self, page: sa.Select[Any], totals: list[int] | None = None) -> list[dict[str, Any]]:
        """Whole records (columns, extra, events, transcript) of the calls ``page`` selects, in one statement.

        A page with a ``total`` column (a window count) appends its value to ``totals``.

        The page becomes a CTE; its calls' events and transcript entries come
        back through one UNION ALL, after a header row per call carrying its
        extra JSON, so each call's columns repeat per row but its extra is
        decoded once.
        """
        chosen = page.cte("page")
        ids = sa.select(chosen.c.id).scalar_subquery()
        no_at, no_type = sa.cast(sa.null(), sa.Double), sa.cast(sa.null(), sa.String(64))
        logs = sa.union_all(
            sa.select(chosen.c.id.label("call_id"), sa.literal(HEADER_ROW).label("kind"), sa.literal(0).label("seq"),
                      no_at.label("at"), no_type.label("type"), chosen.c.extra.label("data")),
            sa.select(call_events.c.call_id, sa.literal(EVENT_ROW), call_events.c.seq, call_events.c.at,
                      call_events.c.type, call_events.c.data).where(call_events.c.call_id.in_(ids)),
            sa.select(transcripts.c.call_id, sa.literal(TRANSCRIPT_ROW), transcripts.c.seq, transcripts.c.at,
                      no_type, transcripts.c.entry).where(transcripts.c.call_id.in_(ids)),
        ).subquery("logs")
        counted = (chosen.c.total,) if "total" in chosen.c else ()
        query = (
            sa.select(*(chosen.c[name] for name in CALL_COLUMNS), *counted, logs.c.kind, logs.c.at, logs.c.type,
                      logs.c.data)
            .join_from(chosen, logs, logs.c.call_id == chosen.c.id)
            .order_by(chosen.c.created_at.desc(), chosen.c.id.desc(), logs.c.kind, logs.c.seq)
        )
        records: list[dict[str, Any]] = []
        with self._engine.connect() as connection:
            for row in connection.execute(query):
                kind, data = row.kind, row.data
                if kind == HEADER_ROW:
                    if counted and totals is not None and not totals:
                        totals.append(int(row.total))
                    record = {name: row._mapping[name] for name in CALL_COLUMNS}
                    record.update(data)
                    record["events"], record["transcript"] = [], []
                    records.append(record)
                elif kind == EVENT_ROW:
                    # The same shape Call.log_event gives an event.
                    records[-1]["events"].append({"at": row.at, "type": row.type, **data})
                else:
                    records[-1]["transcript"].append(data)
        return records

    def find_by_sip_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        """The newest call with this SIP Call-ID."""
        query = (
            sa.select(calls.c.id)
            .where(calls.c.sip_call_id == sip_call_id)
            .order_by(calls.c.created_at.desc(), calls.c.id.desc())
            .limit(1)
        )
        with self._engine.connect() as connection:
            call_id = connection.execute(query).scalar()
        return None if call_id is None else self.get_call(call_id)

    def list_calls(self, *, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict[str, Any]]:
        """Newest first; each item has the column fields only (no events, transcript or extra).

        Out-of-range paging is clamped, not an error: limit to 0..MAX_LIST_LIMIT, offset to >= 0.
        """
        limit = min(max(int(limit), 0), MAX_LIST_LIMIT)
        offset = max(int(offset), 0)
        if limit == 0:
            return []
        query = sa.select(*(calls.c[name] for name in CALL_COLUMNS))
        if status is not None:
            query = query.where(calls.c.status == status)
        query = query.order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit).offset(offset)
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def list_call_records(self, *, limit: int = 50, offset: int = 0, status: str | None = None,
                          worker: str | None = None) -> list[dict[str, Any]]:
        """Like :meth:`list_calls`, but whole records as :meth:`get_call` gives them, read in one statement;
        ``worker`` keeps one cluster worker's calls."""
        limit = min(max(int(limit), 0), MAX_LIST_LIMIT)
        offset = max(int(offset), 0)
        if limit == 0:
            return []
        page = sa.select(calls)
        if status is not None:
            page = page.where(calls.c.status == status)
        if worker is not None:
            page = page.where(calls.c.worker == worker)
        return self._records(page.order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit).offset(offset))

    def search_call_records(self, where: CallFilter, *, limit: int = 50,
                            offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of whole records matching ``where``, newest first, and how many match in all.

        Paged in SQL; the total is a window count in the same statement (a second, plain COUNT only when
        the page is empty, i.e. past the end)."""
        limit = min(max(int(limit), 0), MAX_LIST_LIMIT)
        offset = max(int(offset), 0)
        conditions = where.conditions()
        if limit > 0:
            page = (sa.select(calls, sa.func.count().over().label("total")).where(*conditions)
                    .order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit).offset(offset))
            totals: list[int] = []
            records = self._records(page, totals)
            if records:
                return records, totals[0]
        with self._engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(calls).where(*conditions)).scalar_one()
        return [], int(total)

    def stored_ids(self, ids: list[str]) -> set[str]:
        """Which of these call ids the store has a record for (a live call's first save may still be queued)."""
        if not ids:
            return set()
        with self._engine.connect() as connection:
            return {row.id for row in connection.execute(sa.select(calls.c.id).where(calls.c.id.in_(ids)))}

    def recent_activity(self, since: float, *, limit: int = MAX_RECENT_CALLS) -> dict[str, Any]:
        """The newest ``limit`` calls created since ``since`` (created_at, status, end_reason) and their turn
        latencies: what the console's overview counts. Bounded by ``limit`` however busy the hour was."""
        recent = (sa.select(calls.c.id, calls.c.created_at, calls.c.status, calls.c.end_reason)
                  .where(calls.c.created_at >= since)
                  .order_by(calls.c.created_at.desc(), calls.c.id.desc()).limit(limit))
        with self._engine.connect() as connection:
            rows = [dict(row._mapping) for row in connection.execute(recent)]
            ids = [row["id"] for row in rows]
            latencies = connection.execute(
                sa.select(call_events.c.data)
                .where(call_events.c.call_id.in_(ids), call_events.c.type == LATENCY_EVENT)
            ).scalars().all() if ids else []
        totals = [total for data in latencies if (total := _number((data or {}).get("total"))) is not None]
        return {"calls": rows, "turn_latency_ms": totals, "truncated": len(rows) >= limit}

    # -- a cluster's unfinished calls (app/cluster/reaper.py) -------------------

    def unfinished_calls(self, worker: str, *, limit: int = MAX_LIST_LIMIT) -> list[str]:
        """Ids of the calls ``worker`` ran that have no end yet, oldest first."""
        query = (
            sa.select(calls.c.id)
            .where(calls.c.worker == worker, calls.c.status.in_(UNFINISHED_STATUSES))
            .order_by(calls.c.created_at, calls.c.id)
            .limit(min(max(int(limit), 0), MAX_LIST_LIMIT))
        )
        with self._engine.connect() as connection:
            return [row.id for row in connection.execute(query)]

    def unfinished_workers(self) -> list[str]:
        """The workers that have calls with no end yet."""
        query = (
            sa.select(calls.c.worker)
            .where(calls.c.status.in_(UNFINISHED_STATUSES), calls.c.worker.is_not(None))
            .distinct()
        )
        with self._engine.connect() as connection:
            return sorted(row.worker for row in connection.execute(query))

    # -- trunks ----------------------------------------------------------------

    def save_trunk(self, kind: str, trunk_id: str, config: dict[str, Any]) -> None:
        row = {"kind": kind, "id": trunk_id, "config": dict(config), "updated_at": time.time()}
        with self._engine.begin() as connection:
            upsert(connection, trunks, row, ["kind", "id"])

    def list_trunks(self, kind: str | None = None) -> list[dict[str, Any]]:
        """[{"kind", "id", "config", "updated_at"}] ordered by kind, then id."""
        query = sa.select(trunks).order_by(trunks.c.kind, trunks.c.id)
        if kind is not None:
            query = query.where(trunks.c.kind == kind)
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def delete_trunk(self, kind: str, trunk_id: str) -> bool:
        with self._engine.begin() as connection:
            result = connection.execute(trunks.delete().where(trunks.c.kind == kind, trunks.c.id == trunk_id))
        return result.rowcount > 0

    # -- webhook outbox (driven by callbridge.app.webhooks) ----------------------

    def outbox_add(self, url: str, event: str, payload: dict[str, Any], *, now: float | None = None) -> int:
        """A new pending delivery, due at once; returns its id."""
        now = time.time() if now is None else now
        with self._engine.begin() as connection:
            result = connection.execute(
                webhook_outbox.insert().values(
                    url=url, event=event, payload=payload, created_at=now, attempts=0, next_attempt_at=now
                )
            )
        key = result.inserted_primary_key
        assert key is not None  # an INSERT of one row always has one
        return int(key[0])

    def outbox_due(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Pending deliveries due at `now`, oldest due first."""
        query = (
            sa.select(webhook_outbox)
            .where(webhook_outbox.c.next_attempt_at <= now)
            .order_by(webhook_outbox.c.next_attempt_at, webhook_outbox.c.id)
            .limit(limit)
        )
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def outbox_next_due(self) -> float | None:
        """When the earliest pending delivery falls due (None: nothing pending)."""
        with self._engine.connect() as connection:
            return connection.execute(sa.select(sa.func.min(webhook_outbox.c.next_attempt_at))).scalar()

    def outbox_claim(self, delivery_id: int, due_at: float, lease_until: float) -> bool:
        """Count an attempt and hold the row until lease_until, if it is still due at due_at.

        False when another worker claimed it first. The attempt is recorded before
        the request goes out, so a crash mid-request still counts it, and the row
        comes due again when the lease runs out.
        """
        with self._engine.begin() as connection:
            result = connection.execute(
                webhook_outbox.update()
                .where(webhook_outbox.c.id == delivery_id, webhook_outbox.c.next_attempt_at == due_at)
                .values(attempts=webhook_outbox.c.attempts + 1, next_attempt_at=lease_until)
            )
        return result.rowcount == 1

    def _outbox_update(self, delivery_id: int, **values: Any) -> None:
        with self._engine.begin() as connection:
            connection.execute(webhook_outbox.update().where(webhook_outbox.c.id == delivery_id).values(**values))

    def outbox_delivered(self, delivery_id: int, at: float) -> None:
        self._outbox_update(delivery_id, delivered_at=at, next_attempt_at=None)

    def outbox_retry(self, delivery_id: int, error: str, next_attempt_at: float) -> None:
        self._outbox_update(delivery_id, last_error=error, next_attempt_at=next_attempt_at)

    def outbox_failed(self, delivery_id: int, error: str, at: float) -> None:
        self._outbox_update(delivery_id, last_error=error, failed_at=at, next_attempt_at=None)

    def get_outbox(self, delivery_id: int) -> dict[str, Any] | None:
        with self._engine.connect() as connection:
            row = connection.execute(sa.select(webhook_outbox).where(webhook_outbox.c.id == delivery_id)).first()
        return None if row is None else dict(row._mapping)

    def list_outbox(self, *, pending_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        query = sa.select(webhook_outbox).order_by(webhook_outbox.c.id.desc()).limit(limit)
        if pending_only:
            query = query.where(webhook_outbox.c.next_attempt_at.is_not(None))
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]


_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class AsyncCallStore:
    """CallStore for asyncio: one writer thread, a FIFO queue, one future per write.

    A write's future resolves after its commit, so whatever the caller publishes
    after awaiting it is already durable. Writes run in the order they were
    called. A write whose caller is cancelled still happens. Reads run in the
    store pool (callbridge.offload). close() drains queued writes, then closes the CallStore.
    """

    def __init__(self, store: CallStore) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        # Daemon: an app that forgets close() must still be able to exit.
        self._writer = threading.Thread(target=self._write_loop, name="callstore-writer", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args, kwargs, future, loop = job
            try:
                result, error = function(*args, **kwargs), None
            except Exception as exc:  # noqa: BLE001 - handed to the awaiting caller
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(self._settle, future, result, error, function.__name__)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                if error is not None:
                    log.error("store %s failed after its event loop closed: %r", function.__name__, error)

    @staticmethod
    def _settle(future: asyncio.Future[Any], result: Any, error: Exception | None, name: str) -> None:
        if future.done():  # the caller was cancelled; the write went ahead regardless
            if error is not None:
                log.error("store %s failed (caller gone): %r", name, error)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    async def _write(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreClosed(f"store is closed; {function.__name__} not written")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((function, args, kwargs, future, loop))
        return await future

    async def _read(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_store(function, *args, **kwargs)

    # writes
    async def save_call(self, record: dict[str, Any]) -> None:
        await self._write(self.store.save_call, record)

    async def append_event(self, call_id: str, type: str, data: dict[str, Any], at: float) -> int:
        return await self._write(self.store.append_event, call_id, type, data, at)

    async def append_events(self, events: list[EventRow]) -> list[int]:
        return await self._write(self.store.append_events, events)

    async def append_transcript(self, call_id: str, entry: dict[str, Any]) -> None:
        await self._write(self.store.append_transcript, call_id, entry)

    async def save_trunk(self, kind: str, trunk_id: str, config: dict[str, Any]) -> None:
        await self._write(self.store.save_trunk, kind, trunk_id, config)

    async def delete_trunk(self, kind: str, trunk_id: str) -> bool:
        return await self._write(self.store.delete_trunk, kind, trunk_id)

    async def outbox_add(self, url: str, event: str, payload: dict[str, Any], *, now: float | None = None) -> int:
        return await self._write(self.store.outbox_add, url, event, payload, now=now)

    async def outbox_claim(self, delivery_id: int, due_at: float, lease_until: float) -> bool:
        return await self._write(self.store.outbox_claim, delivery_id, due_at, lease_until)

    async def outbox_delivered(self, delivery_id: int, at: float) -> None:
        await self._write(self.store.outbox_delivered, delivery_id, at)

    async def outbox_retry(self, delivery_id: int, error: str, next_attempt_at: float) -> None:
        await self._write(self.store.outbox_retry, delivery_id, error, next_attempt_at)

    async def outbox_failed(self, delivery_id: int, error: str, at: float) -> None:
        await self._write(self.store.outbox_failed, delivery_id, error, at)

    # reads
    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        return await self._read(self.store.get_call, call_id)

    async def find_by_sip_call_id(self, sip_call_id: str) -> dict[str, Any] | None:
        return await self._read(self.store.find_by_sip_call_id, sip_call_id)

    async def list_calls(self, *, limit: int = 50, offset: int = 0, status: str | None = None) -> list[dict[str, Any]]:
        return await self._read(self.store.list_calls, limit=limit, offset=offset, status=status)

    async def list_call_records(self, *, limit: int = 50, offset: int = 0, status: str | None = None,
                                worker: str | None = None) -> list[dict[str, Any]]:
        return await self._read(self.store.list_call_records, limit=limit, offset=offset, status=status,
                                worker=worker)

    async def search_call_records(self, where: CallFilter, *, limit: int = 50,
                                  offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        return await self._read(self.store.search_call_records, where, limit=limit, offset=offset)

    async def stored_ids(self, ids: list[str]) -> set[str]:
        return await self._read(self.store.stored_ids, ids)

    async def recent_activity(self, since: float, *, limit: int = MAX_RECENT_CALLS) -> dict[str, Any]:
        return await self._read(self.store.recent_activity, since, limit=limit)

    async def list_events(self, call_id: str, *, after_seq: int = 0) -> list[dict[str, Any]]:
        return await self._read(self.store.list_events, call_id, after_seq=after_seq)

    async def unfinished_calls(self, worker: str, *, limit: int = MAX_LIST_LIMIT) -> list[str]:
        return await self._read(self.store.unfinished_calls, worker, limit=limit)

    async def unfinished_workers(self) -> list[str]:
        return await self._read(self.store.unfinished_workers)

    async def list_trunks(self, kind: str | None = None) -> list[dict[str, Any]]:
        return await self._read(self.store.list_trunks, kind)

    async def outbox_due(self, now: float, limit: int) -> list[dict[str, Any]]:
        return await self._read(self.store.outbox_due, now, limit)

    async def outbox_next_due(self) -> float | None:
        return await self._read(self.store.outbox_next_due)

    async def get_outbox(self, delivery_id: int) -> dict[str, Any] | None:
        return await self._read(self.store.get_outbox, delivery_id)

    async def list_outbox(self, *, pending_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return await self._read(self.store.list_outbox, pending_only=pending_only, limit=limit)

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Finish every write queued so far, then close the database."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        await run_store(self._writer.join)
        self.store.close()
