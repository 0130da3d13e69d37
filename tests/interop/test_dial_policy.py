"""Toll fraud: a caller's REFER, the API and dispatch cannot dial what the policy does not allow.

The carrier is a UDP socket on a loopback port, configured as the outbound trunk: it counts
the INVITEs (distinct Call-IDs) that reach it and never answers, so every admitted call stays
up (dialling) for the length of the test. What it counts is what would have been billed.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import SCENARIOS, free_port, http_get, run_sipp

pytestmark = pytest.mark.interop

BURST = 20  # concurrent API requests in the cap test
SETTLE_S = 1.0  # after the last request: time for any INVITE still on its way to arrive


class CarrierStandIn:
    """A carrier that receives INVITEs and never answers: counts distinct Call-IDs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.invites: dict[str, str] = {}  # Call-ID -> Request-URI
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if a test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("latin-1")
            if text.startswith("INVITE "):
                call_id = re.search(r"^(?:Call-ID|i):\s*(\S+)", text, re.M | re.I)
                self.invites.setdefault(call_id.group(1) if call_id else text, text.split(" ", 2)[1])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def carrier():
    stand_in = CarrierStandIn()
    yield stand_in
    stand_in.stop()


def trunk_config(carrier: CarrierStandIn, policy: str = "", transfer_targets: str = '["+1555*"]') -> str:
    return f"""
inbound_trunks:
  - name: callers
    transfer_targets: {transfer_targets}
outbound_trunks:
  - name: carrier
    host: 127.0.0.1
    port: {carrier.port}
    numbers: ["+15550001111"]
    policy: {{{policy}}}
"""


def refer(server, tmp_path, scenario: str, target: str):
    args = [f"127.0.0.1:{server.sip_port}", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-s", "tone",
            "-sf", str(SCENARIOS / scenario), "-key", "target", target]
    return run_sipp(args, cwd=tmp_path, timeout=20)


def dispatch(server, to: str) -> tuple[int, dict]:
    return server.post("/api/dispatch", {"agent_name": "assistant", "metadata": {
        "sip_call_to": to, "sip_trunk_id": "carrier", "participant_identity": "p"}})


@pytest.mark.parametrize("number", ["+19005550100", "+447911123456", "+15550102030"])
def test_refer_to_an_unlisted_target_gets_403_and_dials_nothing(server_factory, carrier, tmp_path, number):
    # +15550102030 is an ordinary number the trunk could dial, but no inbound trunk lists it for transfers.
    server = server_factory(trunk_config(carrier, transfer_targets="[]" if number.startswith("+1555") else
                                         '["+1555*"]'))
    result = refer(server, tmp_path, "uac_refer_refused.xml", f"sip:{number}@127.0.0.1:{carrier.port}")
    assert result.returncode == 0, result.output  # SIPp saw the 403 it expects
    time.sleep(SETTLE_S)
    assert carrier.invites == {}
    call = server.calls()[0]
    assert any(e["type"] == "refer_denied" for e in call["events"]), call["events"]


def test_refer_to_a_listed_number_at_another_host_gets_403(server_factory, carrier, tmp_path):
    # The number is a transfer target, but sbc.example is no trunk and not in outbound.allow_uris.
    server = server_factory(trunk_config(carrier))
    result = refer(server, tmp_path, "uac_refer_refused.xml", "sip:+15550102030@sbc.example:5060")
    assert result.returncode == 0, result.output
    assert carrier.invites == {}


def test_listed_target_is_transferred_once_and_a_second_refer_gets_403(server_factory, carrier, tmp_path):
    server = server_factory(trunk_config(carrier))
    result = refer(server, tmp_path, "uac_refer_twice.xml", f"sip:+15550102030@127.0.0.1:{carrier.port}")
    assert result.returncode == 0, result.output  # 202 to the first REFER, 403 to the second
    server.wait_for(lambda: carrier.invites, timeout=5, what="the carrier's INVITE")
    time.sleep(SETTLE_S)
    assert list(carrier.invites.values()) == [f"sip:+15550102030@127.0.0.1:{carrier.port}"]


@pytest.mark.parametrize("to, reason", [("+19005550100", "premium"), ("+19765550100", "premium"),
                                        ("+447911123456", "not_allowed"), ("+15550109999", "not_allowed")])
def test_dispatch_cannot_reach_a_denied_number(server_factory, carrier, to, reason):
    # "+19*" and "+197*" match premium numbers but do not name them: "+1900*" or "+1976*" would.
    server = server_factory(trunk_config(carrier, policy='allow: ["+1555010203*", "+19*", "+197*"]'))
    status, body = dispatch(server, to)
    assert status == 403, body
    assert body["reason"] == reason
    time.sleep(SETTLE_S)
    assert carrier.invites == {}
    metrics = http_get(server, "/metrics")[2].decode()
    assert f'callbridge_outbound_denied_total{{reason="{body["reason"]}",trunk="carrier"}} 1' in metrics


@pytest.mark.parametrize("to, reason", [("sip:+19005550100@127.0.0.1:{port}", "premium"),
                                        ("sip:+447911123456@127.0.0.1:{port}", "international"),
                                        ("sip:+15550102030@sbc.example:5060", "uri_not_allowed")])
def test_api_call_cannot_reach_a_denied_uri(server_factory, carrier, to, reason):
    # A bare URI at the trunk's own address is judged as a number through that trunk.
    server = server_factory(trunk_config(carrier))
    status, body = server.post("/api/calls", {"to": to.format(port=carrier.port)})
    assert (status, body.get("reason")) == (403, reason), body
    time.sleep(SETTLE_S)
    assert carrier.invites == {}


def test_concurrent_cap_holds_under_a_burst(server_factory, carrier):
    server = server_factory(trunk_config(carrier, policy="max_concurrent: 3"))
    with ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(lambda i: dispatch(server, f"+1555010{i:04d}"), range(BURST)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 3 + [403] * (BURST - 3), results
    time.sleep(SETTLE_S)
    assert len(carrier.invites) == 3
    assert {body.get("reason") for status, body in results if status == 403} == {"concurrent_cap"}


def test_per_minute_cap_holds_under_a_burst(server_factory, carrier):
    server = server_factory(trunk_config(carrier, policy="max_per_minute: 4"))
    with ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(lambda i: server.post("/api/calls", {
            "to": f"sip:+1555010{i:04d}@127.0.0.1:{carrier.port}"}), range(BURST)))
    assert sorted(status for status, _ in results) == [201] * 4 + [403] * (BURST - 4), results
    time.sleep(SETTLE_S)
    assert len(carrier.invites) == 4


def test_daily_cap_reached_is_an_event_and_a_metric(server_factory, carrier):
    server = server_factory(trunk_config(carrier, policy="max_per_day: 2"))
    first, second, third = (dispatch(server, f"+155501020{i}") for i in range(3))
    assert (first[0], second[0], third[0]) == (201, 201, 403), (first, second, third)
    assert third[1]["reason"] == "daily_cap"
    time.sleep(SETTLE_S)
    assert len(carrier.invites) == 2
    metrics = http_get(server, "/metrics")[2].decode()
    assert 'callbridge_outbound_daily_cap_reached{scope="carrier"} 1' in metrics
    assert 'callbridge_outbound_daily_cap_reached_total{scope="trunk:carrier"} 1' in metrics
    assert 'callbridge_outbound_denied_total{reason="daily_cap",trunk="carrier"} 1' in metrics
    record = server.get(f"/api/calls/{second[1]['call_id']}")
    assert [e["scope"] for e in record["events"] if e["type"] == "daily_cap_reached"] == ["trunk:carrier"]
    assert "outbound daily cap reached" in server.log_path.read_text()
