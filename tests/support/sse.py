"""A live client of GET /api/events (Server-Sent Events), read in a thread; every event kept."""

from __future__ import annotations

import json
import threading
import urllib.request

from tests.support.waiting import wait_until


class SseClient:
    """Reads GET /api/events in a thread and keeps every event (the JSON of each ``data:`` line)."""

    def __init__(self, http_port: int, call_id: str | None = None, token: str | None = None) -> None:
        url = f"http://127.0.0.1:{http_port}/api/events" + (f"?call_id={call_id}" if call_id else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        self.response = urllib.request.urlopen(request, timeout=60)
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.events: list[dict] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in self.response:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: "):]))
        except (OSError, ValueError, AttributeError):  # AttributeError: http.client, once closed under us
            return

    def statuses(self, call_id: str) -> list[str]:
        return [e["data"]["status"] for e in self.events if e["call_id"] == call_id and e["type"] == "status"]

    def wait_for(self, predicate, timeout: float, what: str):
        wait_until(predicate, timeout=timeout, what=what, interval=0.05, detail=lambda: f"events: {self.events}")

    def close(self) -> None:
        try:
            self.response.close()
        except OSError:
            pass

    def of(self, call_id: str) -> list[dict]:
        return [e for e in self.events if e["call_id"] == call_id]

