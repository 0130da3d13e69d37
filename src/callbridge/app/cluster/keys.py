"""Where a cluster keeps its live state in Redis: every key name, in one place.

    callbridge:workers               ZSET   worker id -> last heartbeat (unix s); the registry's index
    callbridge:worker:{worker}       HASH   id, pid, instance, api_url, sip_uri, active_calls, capacity,
                                            draining, heartbeat, started_at, state (up|stopped|lost), reaped_at
    callbridge:alive:{worker}        STRING the instance holding the id; expires after worker_timeout_s
                                            (liveness is Redis's clock, not the workers')
    callbridge:owned:{worker}        SET    the worker's live calls (what a reaper ends if it dies)
    callbridge:call:{call}           STRING the worker running the call; kept ENDED_OWNER_TTL_S after the end
                                            so a finished call's recording is still fetched from its worker
    callbridge:reaping:{worker}      STRING lock: the one survivor reaping a dead worker
    callbridge:events                pub/sub channel: every worker's call events (relay.py)
    callbridge:ban:{kind}:{key}      STRING a login ban in force (bans.py), JSON; expires when the ban ends
    callbridge:bans                  pub/sub channel: bans imposed and lifted by any worker (bans.py)

Worker ids match ClusterConfig.worker_id's pattern; call ids are ours (uuid hex), so neither can
reach outside its own key.
"""

from __future__ import annotations

import re

PREFIX = "callbridge:"
WORKERS = PREFIX + "workers"
EVENTS_CHANNEL = PREFIX + "events"
BANS_CHANNEL = PREFIX + "bans"
BAN_PREFIX = PREFIX + "ban:"

# The same rule as ClusterConfig.worker_id, applied to what comes back out of Redis.
WORKER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Call ids are uuid4 hex; anything of this shape may name a call in a URL.
CALL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# A finished call's owner stays known this long: GET .../recording is answered by its worker.
ENDED_OWNER_TTL_S = 24 * 3600
# A dead or stopped worker stays listed (state lost/stopped) this long after its last heartbeat.
GONE_WORKER_RETENTION_S = 3600.0


def worker(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


def alive(worker_id: str) -> str:
    return f"{PREFIX}alive:{worker_id}"


def owned(worker_id: str) -> str:
    return f"{PREFIX}owned:{worker_id}"


def call(call_id: str) -> str:
    return f"{PREFIX}call:{call_id}"


def reaping(worker_id: str) -> str:
    return f"{PREFIX}reaping:{worker_id}"


def ban(kind: str, key: str) -> str:
    """A login ban; ``kind`` is source or username (sip/guard.py), ``key`` the address or the username."""
    return f"{BAN_PREFIX}{kind}:{key}"


def text(value: object) -> str | None:
    """A Redis reply (bytes with decode_responses off) as text; None when absent or not UTF-8."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return None
    return str(value)
