"""The cluster's sans-IO parts and its API gateway, in process: placement, the peer mark, the relay's
wire format, ending a lost call's record, registry entries, the bounded send queue, and forwarding
(the peers are httpx mock transports; the local API is a stub ASGI app)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from callbridge.app.cluster import placement
from callbridge.app.cluster.forwarding import ClusterGateway, ClusterStateUnavailable, Peer
from callbridge.app.cluster.peerauth import HEADER, MAX_SKEW_S, PeerMark
from callbridge.app.cluster.reaper import end_as_lost
from callbridge.app.cluster.registry import WorkerInfo
from callbridge.app.cluster.relay import MAX_MESSAGE_BYTES, Relay, RelayMessageError, decode_message, encode
from callbridge.app.cluster.sendqueue import SendQueue
from callbridge.app.events import BusEvent, EventBus

TOKEN = "cluster-token-0123456789"


# -- placement ----------------------------------------------------------------------------------------

def candidate(worker_id: str, active: int, capacity: int, *, draining: bool = False, alive: bool = True):
    return placement.Candidate(worker_id, active, capacity, draining, alive)


def test_placement_takes_the_most_room_then_self_then_the_lowest_id():
    workers = [candidate("a", 1, 4), candidate("b", 0, 4), candidate("c", 0, 4)]
    assert placement.choose(workers, "a").id == "b"  # 4 spare beats 3; b before c on the tie
    assert placement.choose(workers, "c").id == "c"  # a tie keeps the call where it was asked
    assert [c.id for c in placement.rank(workers, "c")] == ["c", "b", "a"]


def test_placement_skips_full_draining_and_dead_workers():
    workers = [candidate("a", 4, 4), candidate("b", 0, 9, draining=True), candidate("c", 0, 9, alive=False)]
    assert placement.choose(workers, "a") is None
    assert placement.rank([*workers, candidate("d", 2, 3)], "a")[0].id == "d"


# -- the peer mark ------------------------------------------------------------------------------------

def test_a_peer_mark_verifies_only_for_its_request_its_time_and_the_token():
    mark, now = PeerMark(TOKEN), 1_700_000_000.0
    value = mark.sign("w1", "POST", "/api/calls/abc/hangup", now)
    assert mark.verify(value, "POST", "/api/calls/abc/hangup", now + 1) == "w1"
    assert mark.verify(value, "POST", "/api/calls/xyz/hangup", now) is None  # another call
    assert mark.verify(value, "GET", "/api/calls/abc/hangup", now) is None  # another method
    assert mark.verify(value, "POST", "/api/calls/abc/hangup", now + MAX_SKEW_S + 2) is None  # stale
    assert PeerMark("another-token").verify(value, "POST", "/api/calls/abc/hangup", now) is None
    worker, at, mac = value.split(";")
    for forged in (f"w2;{at};{mac}", f"{worker};{int(at) + 1};{mac}", f"{worker};{at};{'0' * 64}", "", ";;",
                   "w1;soon;00", "w 1;1;00", "x" * 10_000, f"{value};extra"):
        assert mark.verify(forged, "POST", "/api/calls/abc/hangup", now) is None, forged


# -- the relay's wire format --------------------------------------------------------------------------

async def test_relay_messages_round_trip_and_bad_ones_name_the_problem():
    event = BusEvent("c1", "status", {"status": "active"}, 12.5, 3, "w1")
    relayed = await decode_message(encode(event, "w2"))
    assert relayed.via == "w2" and relayed.event == event

    good = json.loads(encode(event, "w2"))
    bad = [b"\xff", b"[" * 100 + b"]" * 100, b"{}", b"null", json.dumps({**good, "v": 9}).encode(),
           json.dumps({**good, "worker": None}).encode(), json.dumps({**good, "via": "a/b"}).encode(),
           json.dumps({**good, "call_id": "x" * 65}).encode(), json.dumps({**good, "type": ""}).encode(),
           json.dumps({**good, "at": True}).encode(), json.dumps({**good, "at": "1"}).encode(),
           json.dumps({**good, "seq": 1.5}).encode(), json.dumps({**good, "data": "text"}).encode(),
           encode(event, "w2").replace(b"12.5", b"Infinity"), b"x" * (MAX_MESSAGE_BYTES + 1), "text"]
    for message in bad:
        with pytest.raises(RelayMessageError):
            await decode_message(message)


async def test_the_relay_puts_other_workers_events_on_the_bus_and_never_its_own():
    bus = EventBus("w1")
    relay = Relay(None, None, bus, "w1")  # type: ignore[arg-type] - no Redis: only what arrives is tested
    subscription = bus.subscribe()
    other = BusEvent("c2", "dtmf", {"digit": "5"}, 1.0, 7, "w2")
    await relay.on_message(encode(other, "w2"))
    await relay.on_message(encode(BusEvent("c1", "status", {}, 1.0, 1, "w1"), "w3"))  # about our own call
    await relay.on_message(encode(other, "w1"))  # one we sent (a survivor's report): already on our bus
    await relay.on_message(b"garbage")
    assert subscription.queue.get_nowait() == other
    assert subscription.queue.empty()
    assert (relay.received, relay.rejected) == (1, 1)
    assert relay.queue.backlog == 0  # what arrived is never sent out again


def test_the_bus_stamps_its_worker_and_taps_see_every_event():
    bus = EventBus("w1")
    seen: list[BusEvent] = []
    bus.taps.append(seen.append)
    bus.taps.insert(0, lambda event: 1 / 0)  # a broken tap costs nobody their event
    local = bus.publish("c1", "status", {"status": "ringing"}, at=1.0, seq=1)
    relayed = bus.publish("c2", "status", {}, at=2.0, seq=1, worker="w2")
    assert (local.worker, relayed.worker) == ("w1", "w2")
    assert seen == [local, relayed]
    assert local.to_json()["worker"] == "w1"
    assert EventBus().publish("c3", "status", {}).to_json()["worker"] is None  # one process: no worker


# -- a lost call's record -----------------------------------------------------------------------------

def test_a_lost_call_ends_at_the_last_sign_of_life_keeping_its_events():
    record = {"id": "c1", "status": "active", "created_at": 100.0, "answered_at": 101.0, "ended_at": None,
              "events": [{"at": 100.0, "type": "status", "status": "ringing"},
                         {"at": 101.0, "type": "status", "status": "active"},
                         {"at": 104.5, "type": "dtmf", "digit": "1"}]}
    ended, closing = end_as_lost(record, last_seen=104.0)
    assert ended["ended_at"] == 104.5  # a journaled event after the last heartbeat is later still
    assert (ended["status"], ended["end_reason"], ended["duration_s"], ended["talk_s"]) == (
        "hangup", "worker_lost", 4.5, 3.5)
    assert closing == [("status", {"status": "hangup", "end_reason": "worker_lost"}),
                       ("ended", {"reason": "worker_lost", "duration_s": 4.5, "talk_s": 3.5})]
    assert ended["events"][:3] == record["events"] and [e["type"] for e in ended["events"][3:]] == ["status", "ended"]
    assert record["status"] == "active"  # the input is not changed
    assert end_as_lost({**record, "events": [], "answered_at": None}, 109.0)[0]["talk_s"] is None


# -- registry entries ---------------------------------------------------------------------------------

def test_registry_entries_round_trip_and_bad_ones_are_refused():
    info = WorkerInfo(id="w1", pid=42, instance="i", api_url="http://10.0.0.1:8080", sip_uri="sip:10.0.0.1:5060",
                      active_calls=2, capacity=10, draining=True, heartbeat=1718000000.25, started_at=1718000000.0)
    stored = {k.encode(): v.encode() for k, v in info.to_hash().items()}
    assert WorkerInfo.from_hash(stored) == info
    assert info.to_json(alive=True)["state"] == "draining" and info.to_json(alive=False)["state"] == "lost"
    for name, value in (("api_url", b"file:///etc/passwd"), ("api_url", b"http://" + b"x" * 600),
                        ("sip_uri", b"tel:1"), ("id", b"w 1"), ("pid", b"-1"), ("heartbeat", b"nan"),
                        ("state", b"king"), ("capacity", b"\xff")):
        with pytest.raises(ValueError):
            WorkerInfo.from_hash({**stored, name.encode(): value})
    with pytest.raises(ValueError):
        WorkerInfo.from_hash({k: v for k, v in stored.items() if k != b"api_url"})


# -- the bounded send queue ---------------------------------------------------------------------------

async def test_a_stuck_redis_fills_the_queue_and_later_items_are_dropped_without_waiting():
    stuck = asyncio.Event()
    sent: list[list[int]] = []

    async def send(batch: list[int]) -> None:
        sent.append(batch)
        await stuck.wait()  # Redis never answers

    queue: SendQueue[int] = SendQueue("test", send, maxsize=10)
    queue.start()
    await asyncio.sleep(0)
    started = time.perf_counter()
    accepted = [queue.put(i) for i in range(1000)]
    assert time.perf_counter() - started < 0.5  # a call's event consumer never waits on Redis
    await asyncio.sleep(0.01)
    assert sum(accepted) <= 11 and queue.dropped == 1000 - sum(accepted)
    stuck.set()
    await queue.close()
    assert [i for batch in sent for i in batch] == [i for i, ok in enumerate(accepted) if ok]  # in order


# -- the gateway --------------------------------------------------------------------------------------

class Directory:
    worker_id = "w1"

    def __init__(self) -> None:
        self.local: set[str] = set()
        self.owners: dict[str, Peer] = {}
        self.ranked: list[Peer] = []
        self.down = False

    def is_local(self, call_id: str) -> bool:
        return call_id in self.local

    async def owner(self, call_id: str) -> Peer | None:
        if self.down:
            raise ClusterStateUnavailable("Connection refused")
        return self.owners.get(call_id)

    async def recorded_owner(self, call_id: str) -> Peer | None:
        return None

    async def placements(self) -> list[Peer]:
        if self.down:
            raise ClusterStateUnavailable("Connection refused")
        return self.ranked

    async def workers(self) -> list[dict[str, Any]]:
        if self.down:
            raise ClusterStateUnavailable("Connection refused")
        return [{"id": "w1"}, {"id": "w2"}]


async def local_api(scope, receive, send) -> None:
    """Stands in for this worker's own routes: says it answered, and echoes the body it read."""
    message = await receive()
    body = json.dumps({"answered_by": "local", "body": message.get("body", b"").decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


W2 = Peer("w2", "http://10.0.0.2:8080", alive=True)


def gateway_client(directory: Directory, peer_handler) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return peer_handler(request)

    peers = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    gateway = ClusterGateway(local_api, directory, PeerMark(TOKEN), peers, TOKEN)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://w1"), seen


def answered_by_w2(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"answered_by": "w2"}, headers={"Retry-After": "9", "Set-Cookie": "x=1"})


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("Connection refused", request=request)


async def test_an_action_on_another_workers_call_goes_to_it_once_with_a_valid_mark():
    directory = Directory()
    directory.owners["c9"] = W2
    client, seen = gateway_client(directory, answered_by_w2)
    response = await client.post("/api/calls/c9/dtmf?x=1", json={"digits": "12"},
                                 headers={"Authorization": "Bearer t", "Origin": "http://evil", "Cookie": "c"})
    assert (response.status_code, response.json()) == (202, {"answered_by": "w2"})
    assert response.headers["retry-after"] == "9" and "set-cookie" not in response.headers
    assert response.headers["x-callbridge-worker"] == "w2"
    [forwarded] = seen
    assert (forwarded.method, str(forwarded.url)) == ("POST", "http://10.0.0.2:8080/api/calls/c9/dtmf?x=1")
    assert json.loads(forwarded.content) == {"digits": "12"} and forwarded.headers["authorization"] == f"Bearer {TOKEN}"
    assert "origin" not in forwarded.headers and "cookie" not in forwarded.headers
    assert PeerMark(TOKEN).verify(forwarded.headers[HEADER], "POST", "/api/calls/c9/dtmf", time.time()) == "w1"


async def test_a_forwarded_request_is_never_forwarded_again_and_a_forged_mark_is_ignored():
    directory = Directory()
    directory.owners["c9"] = W2  # even if Redis says another worker has it (a stale view), no second hop
    client, seen = gateway_client(directory, answered_by_w2)
    mark = PeerMark(TOKEN).sign("w3", "POST", "/api/calls/c9/hangup", time.time())
    response = await client.post("/api/calls/c9/hangup", headers={HEADER: mark})
    assert response.json()["answered_by"] == "local" and seen == []
    forged = PeerMark("wrong").sign("w3", "POST", "/api/calls/c9/hangup", time.time())
    response = await client.post("/api/calls/c9/hangup", headers={HEADER: forged})
    assert response.json() == {"answered_by": "w2"} and len(seen) == 1


async def test_local_unknown_and_own_calls_are_answered_here():
    directory = Directory()
    directory.local.add("mine")
    directory.owners["self"] = Peer("w1", "http://w1", alive=True)
    client, seen = gateway_client(directory, answered_by_w2)
    for path in ("/api/calls/mine/hangup", "/api/calls/nobody/hangup", "/api/calls/self", "/api/calls",
                 "/api/calls/bad%20id/hangup", "/metrics"):
        response = await client.get(path)
        assert response.json()["answered_by"] == "local", path
    assert seen == []


async def test_an_unreachable_or_lost_owner_is_503_for_actions_and_the_store_for_reads():
    directory = Directory()
    directory.owners.update(c1=W2, c2=Peer("w2", W2.api_url, alive=False))
    client, _ = gateway_client(directory, refused)
    response = await client.post("/api/calls/c1/hangup")
    assert response.status_code == 503 and response.json()["worker"] == "w2"
    assert "unreachable" in response.json()["error"]
    assert response.headers["retry-after"]
    assert (await client.get("/api/calls/c1")).json()["answered_by"] == "local"
    response = await client.post("/api/calls/c2/hold")
    assert response.status_code == 503 and "lost" in response.json()["error"]
    assert (await client.get("/api/calls/c2/recording")).json()["answered_by"] == "local"
    directory.down = True
    response = await client.post("/api/calls/c1/transfer", json={"target": "sip:x@y"})
    assert response.status_code == 503 and "Redis" in response.json()["error"]
    assert (await client.get("/api/calls/c1")).json()["answered_by"] == "local"


async def test_a_peer_failing_mid_request_is_502():
    directory = Directory()
    directory.owners["c1"] = W2

    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, _ = gateway_client(directory, times_out)
    response = await client.post("/api/calls/c1/hangup")
    assert response.status_code == 502 and response.json()["worker"] == "w2"


async def test_placement_forwards_falls_through_to_the_next_and_says_503_when_none_has_room():
    directory = Directory()
    client, seen = gateway_client(directory, answered_by_w2)
    body = {"agent_name": "a", "metadata": {}}
    directory.ranked = [W2, Peer("w1", "http://w1", True)]
    assert (await client.post("/api/dispatch", json=body)).json() == {"answered_by": "w2"}
    assert json.loads(seen[-1].content) == body
    directory.ranked = [Peer("w1", "http://w1", True), W2]
    assert (await client.post("/api/calls", json={"to": "sip:a@b"})).json()["answered_by"] == "local"

    down, _ = gateway_client(directory, refused)
    directory.ranked = [W2, Peer("w1", "http://w1", True)]  # the best cannot be reached: the next, with the body
    response = await down.post("/api/dispatch", json=body)
    assert response.json()["answered_by"] == "local" and json.loads(response.json()["body"]) == body
    directory.ranked = [W2]
    response = await down.post("/api/dispatch", json=body)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    directory.ranked = []
    response = await client.post("/api/dispatch", json=body)
    assert response.status_code == 503 and "no worker has room" in response.json()["error"]
    directory.down = True  # no registry: this worker places it
    assert (await client.post("/api/dispatch", json=body)).json()["answered_by"] == "local"


async def test_the_workers_route():
    directory = Directory()
    client, _ = gateway_client(directory, answered_by_w2)
    assert (await client.get("/api/cluster/workers")).json() == {"worker": "w1", "workers": [{"id": "w1"},
                                                                                           {"id": "w2"}]}
    assert (await client.post("/api/cluster/workers")).status_code == 405
    directory.down = True
    assert (await client.get("/api/cluster/workers")).status_code == 503
