"""A scripted FlowIO for runner tests, on a virtual clock (and its own tests).

Scripts say when (in call seconds) the caller presses a key or finishes an
utterance. Prompts take ``say_seconds`` of virtual time unless a key
interrupts them. Virtual time only moves when every task is waiting, so the
tests are exact and fast no matter how loaded the machine is.
"""

from __future__ import annotations

import asyncio
import heapq
from pathlib import Path

from callbridge.ivr.handoff import HandoffContext
from callbridge.ivr.io import CallInfo


class VirtualClock:
    # Enough event-loop turns for a woken task to react (cancel a racing
    # task, start its next wait) before time moves on.
    SETTLE_TURNS = 50

    def __init__(self) -> None:
        self.now = 0.0
        self._waiters: list[tuple[float, int, asyncio.Future]] = []
        self._sequence = 0
        self._driver: asyncio.Task | None = None

    async def sleep_until(self, when: float) -> None:
        if when <= self.now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (when, self._sequence, future))
        self._sequence += 1
        if self._driver is None or self._driver.done():
            self._driver = asyncio.ensure_future(self._drive())
        await future

    async def _drive(self) -> None:
        while True:
            for _ in range(self.SETTLE_TURNS):
                await asyncio.sleep(0)
            while self._waiters and self._waiters[0][2].done():  # cancelled waits
                heapq.heappop(self._waiters)
            if not self._waiters:
                return
            when, _, future = heapq.heappop(self._waiters)
            self.now = max(self.now, when)
            future.set_result(None)

    async def stop(self) -> None:
        if self._driver is not None and not self._driver.done():
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)


class FakeIO:
    def __init__(self, *, keys=(), speech=(), caller="+15551230000", caller_name=None, called="demo",
                 trunk=None, headers=None, say_seconds=2.0, transfer_accepted=True) -> None:
        self.info = CallInfo("call-1", caller, caller_name, called, trunk, dict(headers or {}))
        self.clock = VirtualClock()
        self.keys = sorted(keys)  # [(time, key)], consumed from the front
        self.speech = sorted(speech)  # [(time, transcript)]
        self.say_seconds = say_seconds
        self.transfer_accepted = transfer_accepted
        self.calls: list[tuple] = []
        self.records: list[tuple[str, dict]] = []
        self.handoffs: list[tuple[str, HandoffContext]] = []

    # -- helpers for assertions ---------------------------------------------

    @property
    def said(self) -> list[str]:
        return [call[1] for call in self.calls if call[0] == "say"]

    def recorded(self, kind: str) -> list[dict]:
        return [fields for record_kind, fields in self.records if record_kind == kind]

    # -- FlowIO ---------------------------------------------------------------

    def _key_waiting(self) -> bool:
        return bool(self.keys) and self.keys[0][0] <= self.clock.now

    async def _interruptible(self, seconds: float) -> None:
        if self._key_waiting():
            return
        end = self.clock.now + seconds
        if self.keys and self.keys[0][0] < end:
            end = self.keys[0][0]
        await self.clock.sleep_until(end)

    async def say(self, text, *, language, voice):
        self.calls.append(("say", text, language, voice, self.clock.now))
        await self._interruptible(self.say_seconds)

    async def play(self, path: Path):
        self.calls.append(("play", path, self.clock.now))
        await self._interruptible(self.say_seconds)

    async def read_digit(self, timeout):
        if not self._key_waiting() and timeout > 0:
            deadline = self.clock.now + timeout
            await self.clock.sleep_until(min(self.keys[0][0], deadline) if self.keys else deadline)
        if self._key_waiting():
            return self.keys.pop(0)[1]
        return None

    def clear_digits(self):
        self.calls.append(("clear_digits", self.clock.now))
        while self._key_waiting():
            self.keys.pop(0)

    async def listen(self, *, timeout, language, hints):
        self.calls.append(("listen", language, list(hints), self.clock.now))
        deadline = self.clock.now + timeout
        if self.speech and self.speech[0][0] <= deadline:
            await self.clock.sleep_until(self.speech[0][0])
            return self.speech.pop(0)[1]
        await self.clock.sleep_until(deadline)
        return None

    async def transfer(self, target, *, method, trunk):
        self.calls.append(("transfer", target, method, trunk))
        return self.transfer_accepted

    async def handoff(self, agent, context):
        self.calls.append(("handoff", agent))
        self.handoffs.append((agent, context))

    async def hangup(self, reason):
        self.calls.append(("hangup", reason))

    def record(self, kind, **fields):
        self.records.append((kind, fields))


async def run_with(runner, io: FakeIO) -> str:
    try:
        return await runner.run()
    finally:
        await io.clock.stop()


# -- the fake's own behaviour ---------------------------------------------------


async def test_key_interrupts_prompt_and_stays_buffered():
    io = FakeIO(keys=[(0.5, "7")])
    await io.say("hello", language="en", voice=None)
    assert io.clock.now == 0.5
    assert await io.read_digit(0) == "7"
    assert await io.read_digit(0) is None
    await io.clock.stop()


async def test_read_digit_times_out_in_virtual_time():
    io = FakeIO(keys=[(10, "1")])
    assert await io.read_digit(3) is None
    assert io.clock.now == 3
    assert await io.read_digit(10) == "1"
    assert io.clock.now == 10
    await io.clock.stop()


async def test_concurrent_waits_resolve_in_time_order():
    io = FakeIO(keys=[(4, "5")], speech=[(2, "hello")])
    digit = asyncio.ensure_future(io.read_digit(10))
    heard = asyncio.ensure_future(io.listen(timeout=10, language="en", hints=[]))
    done, _ = await asyncio.wait({digit, heard}, return_when=asyncio.FIRST_COMPLETED)
    assert done == {heard} and heard.result() == "hello" and io.clock.now == 2
    digit.cancel()
    await io.clock.stop()
