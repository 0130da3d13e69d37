"""JSON request bodies, decoded without stalling the event loop that paces the audio.

Decoding holds the GIL for as long as it runs, in any thread: on this machine a
1 MB body of 64-deep arrays (500,000 lists) took ~200 ms to decode and ~60 ms to
free, and every call's media waits that long. A thread alone does not help; bounded
work does. So before decoding, a linear scan refuses bodies nested deeper than
:data:`MAX_JSON_DEPTH` or holding more than :data:`MAX_JSON_VALUES` values (no API
body comes near either). What is left decodes in at most ~5 ms (measured: 1 MB of
20,000 keys), and bodies over :data:`INLINE_DECODE_BYTES` are scanned and decoded
in a worker thread, so the scan, which runs bytecode, shares the GIL with the loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 20_000
# Larger bodies are checked and decoded in the worker thread.
INLINE_DECODE_BYTES = 4096
# Where the guard leaves the decoded body for the handlers (see json_body()).
JSON_SCOPE_KEY = "callbridge.json"

_OPENERS = (0x5B, 0x7B)  # "[" "{"
_CLOSERS = (0x5D, 0x7D)  # "]" "}"
_STRUCTURE = re.compile(rb'[\[\]{},"]')
# The rest of a string after its opening quote. Possessive quantifiers: no backtracking, so an
# unterminated string costs one linear pass, never one pass per quote.
_STRING_TAIL = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)


class JsonTooComplex(ValueError):
    """Nested too deep or too many values: refused (400) before decoding."""


class NotJson(ValueError):
    """Not UTF-8 JSON (RFC 8259 §8.1): the handlers answer it as a body that is not an object."""


TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
TOO_MANY = f"JSON with more than {MAX_JSON_VALUES} values"


def check_structure(body: bytes, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES) -> None:
    """Raise JsonTooComplex when arrays and objects nest deeper than ``max_depth``, or when there are more than
    ``max_values`` values (each comma and container counts one). What sits in strings does not count."""
    openers = body.count(b"[") + body.count(b"{")
    if openers <= max_depth and openers + body.count(b",") <= max_values:
        return  # the common case, at C speed
    depth = values = pos = 0
    search, tail = _STRUCTURE.search, _STRING_TAIL.match
    while (found := search(body, pos)) is not None:
        char = body[found.start()]
        pos = found.end()
        if char == 0x22:  # '"'
            end = tail(body, pos)
            if end is None:
                return  # unterminated string: not JSON at all, the decoder says so
            pos = end.end()
            continue
        if char in _CLOSERS:
            depth -= 1
            continue
        values += 1
        if values > max_values:
            raise JsonTooComplex(TOO_MANY)
        if char in _OPENERS:
            depth += 1
            if depth > max_depth:
                raise JsonTooComplex(TOO_DEEP)


def decode(body: bytes) -> object:
    check_structure(body)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotJson(f"not UTF-8: {exc.reason}") from None
    try:
        return json.loads(text)
    except RecursionError:  # cannot happen after the scan; never let it escape as a traceback
        raise JsonTooComplex(TOO_DEEP) from None
    except ValueError as exc:
        raise NotJson(str(exc)) from None


_worker: ThreadPoolExecutor | None = None


async def decode_json(body: bytes) -> object:
    """Decode a request body; raises JsonTooComplex or NotJson."""
    if len(body) <= INLINE_DECODE_BYTES:
        return decode(body)
    global _worker
    if _worker is None:
        # One worker: large bodies queue instead of taking every core between them.
        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="json-decode")
    return await asyncio.get_running_loop().run_in_executor(_worker, decode, body)


async def json_body(request) -> object:
    """The request's JSON body as the guard decoded it; None when there is none or it is not JSON."""
    scope = request.scope
    if JSON_SCOPE_KEY in scope:
        return scope[JSON_SCOPE_KEY]
    try:  # an app used without the guard (unit tests of one route)
        return await request.json()
    except ValueError:
        return None


__all__ = ["MAX_JSON_DEPTH", "MAX_JSON_VALUES", "JsonTooComplex", "NotJson", "check_structure", "decode",
           "decode_json", "json_body"]
