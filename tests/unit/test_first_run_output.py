"""The start-up banner and the two log formats, as pure functions."""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path

from callbridge.app.auth import ApiToken
from callbridge.app.banner import banner_lines, call_number, print_banner
from callbridge.app.bind_errors import port_taken
from callbridge.app.config import Config
from callbridge.app.logs import JsonFormatter, TextFormatter, use_text

TOKEN = "banner-token-0123456789abcdef+/="


def record(message: str = "call ended", **extra) -> logging.LogRecord:
    entry = logging.LogRecord("callbridge.call", logging.INFO, __file__, 1, message, None, None)
    entry.__dict__.update(extra)
    return entry


def test_text_lines_carry_the_same_fields_as_json():
    entry = record(call_id="c1", reason="the caller hung up", empty="", n=3)
    text = TextFormatter().format(entry)
    assert text.endswith('INFO    callbridge.call  call ended  call_id=c1 reason="the caller hung up" empty="" n=3')
    assert "\n" not in text
    parsed = json.loads(JsonFormatter().format(entry))
    assert parsed["msg"] == "call ended" and parsed["reason"] == "the caller hung up" and parsed["n"] == 3


def test_a_value_with_a_newline_stays_on_one_text_line():
    assert "\n" not in TextFormatter().format(record(path="a\nb=c"))


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_only():
    assert use_text("auto", FakeTty()) and not use_text("auto", io.StringIO())
    assert use_text("text", io.StringIO()) and not use_text("json", FakeTty())


def config(**sections) -> Config:
    return Config.model_validate({"server": {"host": "0.0.0.0"}, **sections})


def test_the_banner_links_the_console_the_phone_and_a_number_that_reaches_the_line():
    lines = "\n".join(banner_lines(config(), sip_port=5060, sip_tls_port=None, http_port=8080,
                                   token=ApiToken(TOKEN, None), show_token=True))
    assert "http://127.0.0.1:8080/login#token=banner-token-0123456789abcdef%2B%2F%3D" in lines
    assert "http://127.0.0.1:8080/phone" in lines and "sip:demo@127.0.0.1:5060" in lines
    hidden = "\n".join(banner_lines(config(), sip_port=5060, sip_tls_port=None, http_port=8080,
                                    token=ApiToken(TOKEN, Path("/d/api_token")), show_token=False))
    assert TOKEN not in hidden and "/login   (the API token is in /d/api_token)" in hidden


def test_the_number_is_one_routed_to_the_default_flow():
    assert call_number(config(routing={"numbers": {"100": "tone", "200": "demo"}})) == "200"
    assert call_number(config(routing={"default_flow": "tone"})) == "tone"


def test_the_token_is_printed_to_a_terminal_or_when_new_only():
    for stream, created, shown in ((FakeTty(), False, True), (io.StringIO(), True, True),
                                   (io.StringIO(), False, False)):
        print_banner(config(), sip_port=1, sip_tls_port=None, http_port=2,
                     token=ApiToken(TOKEN, Path("/d/api_token"), created=created), stream=stream)
        assert ("#token=" in stream.getvalue()) is shown


def test_port_taken_sees_a_held_port_and_not_a_free_one():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert port_taken("127.0.0.1", port, socket.SOCK_DGRAM)
    assert not port_taken("127.0.0.1", port, socket.SOCK_DGRAM)
    assert not port_taken("127.0.0.1", 0, socket.SOCK_STREAM)
