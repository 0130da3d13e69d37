"""The ``http`` node: one webhook request, its JSON reply into variables."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from .nodes import HttpNode
from .template import render
from .variables import dig, flatten

MAX_REPLY_BYTES = 1_000_000


class WebhookError(Exception):
    """The webhook failed: timeout, network error, non-2xx or a non-JSON reply."""


def render_body(value: object, variables: Mapping[str, str]) -> object:
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, dict):
        return {key: render_body(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [render_body(item, variables) for item in value]
    return value


async def call_webhook(client: httpx.AsyncClient, node: HttpNode, variables: Mapping[str, str]) -> dict[str, str]:
    """Send the request; return the variables to set from the reply."""
    url = render(node.url, variables)
    headers = {name: render(value, variables) for name, value in node.headers.items()}
    body = render_body(node.body, variables)
    try:
        # httpx's timeout is per network operation; this bounds the whole exchange.
        async with asyncio.timeout(node.timeout):
            response = await client.request(node.method, url, headers=headers, json=body, timeout=node.timeout)
    except (TimeoutError, httpx.TimeoutException):
        raise WebhookError(f"timed out after {node.timeout:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise WebhookError(f"request failed: {type(exc).__name__}: {exc}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookError(f"HTTP {response.status_code}")
    if len(response.content) > MAX_REPLY_BYTES:
        raise WebhookError("reply too large")
    try:
        reply = response.json()
    except ValueError:
        raise WebhookError("reply is not JSON") from None
    if not isinstance(reply, dict):
        raise WebhookError("reply is not a JSON object")
    if node.into_prefix:
        return flatten(node.into_prefix, reply)
    return {variable: dig(reply, path) for variable, path in node.into_map.items()}
