"""Toll fraud in a cluster: a trunk's caps hold for all the workers together, not once per worker.

Two real workers share one Redis; the carrier is a UDP stand-in that counts the INVITEs reaching it
(distinct Call-IDs) and never answers, so every admitted call stays up for the whole test. With
each worker counting alone the carrier would see twice the cap.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.interop.test_dial_policy import SETTLE_S, CarrierStandIn, trunk_config
from tests.support import cluster_workers
from tests.support.cluster_workers import request, wait_until, workers_of

cluster, redis_server, postgres_cluster = (cluster_workers.cluster, cluster_workers.redis_server,  # fixtures
                                           cluster_workers.postgres_cluster)

pytestmark = pytest.mark.interop

CAP = 3
PER_WORKER = 8  # API requests sent to each worker in the burst


@pytest.fixture
def carrier():
    stand_in = CarrierStandIn()
    yield stand_in
    stand_in.stop()


def test_max_concurrent_holds_across_two_workers(cluster, carrier):
    trunks = trunk_config(carrier, policy=f"max_concurrent: {CAP}")
    a = cluster.start_worker("A", max_calls=20, extra=trunks)
    b = cluster.start_worker("B", max_calls=20, extra=trunks)
    wait_until(lambda: workers_of(a).keys() == {"A", "B"}, timeout=10, what="both workers registered")

    def dial(index: int):
        worker = (a, b)[index % 2]
        return request(worker, "POST", "/api/calls", {"to": f"sip:+1555010{index:04d}@127.0.0.1:{carrier.port}"})

    with ThreadPoolExecutor(2 * PER_WORKER) as pool:
        results = list(pool.map(dial, range(2 * PER_WORKER)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * CAP + [403] * (2 * PER_WORKER - CAP), results
    assert {body.get("reason") for status, body, _ in results if status == 403} == {"concurrent_cap"}
    time.sleep(SETTLE_S)
    assert len(carrier.invites) == CAP, carrier.invites  # what would have been billed
