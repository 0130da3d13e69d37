"""Signing in to the console in a real Chromium: the login page, the session cookie, the one-click link.

A person opens the console, is sent to /login, types a wrong token (an alert says so), then the right one
with the keyboard alone, and lands on the console, whose API calls now succeed by cookie. The banner's
``/login#token=...`` link signs in with one click and leaves no token in the address bar. Without the
token or the cookie the API stays 401, from Python and from a fresh browser.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.browser.conftest import ACTION_TIMEOUT_MS, console_url
from tests.interop.conftest import TONE_LINE, start_server, stop_server

TOKEN = "browser-console-token-0123456789"
CONFIG = f"api:\n  token: {TOKEN}\n"
FETCH_CALLS = "async () => (await fetch('/api/calls', {credentials: 'same-origin'})).status"


@pytest.fixture
def server(tmp_path):
    """A real ``callbridge serve`` (the tone line) with a configured token."""
    running = start_server(tmp_path, TONE_LINE + CONFIG)
    yield running
    stop_server(running)


def new_page(browser):
    context = browser.new_context()
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    return context, context.new_page()


def path_of(page) -> str:
    return urllib.parse.urlsplit(page.url).path


def test_the_console_sends_a_stranger_to_login_and_a_keyboard_sign_in_brings_them_back(server, browser_factory,
                                                                                        artifacts):
    browser = browser_factory()
    context, page = new_page(browser)
    page.goto(console_url(server, "/"))
    page.wait_for_url("**/login?next=*")  # the console's first API call got 401
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["next"][0].startswith("/")
    token_box = page.get_by_label("API token")
    assert token_box.get_attribute("type") == "password"
    # Focused once the page's script has run: type at once.
    # A function, not an expression: Playwright re-polls an expression with eval(), which the CSP refuses.
    page.wait_for_function("() => document.activeElement && document.activeElement.id === 'token'", timeout=10_000)

    page.keyboard.type("not-the-token-0123456789")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    alert.filter(has_text="Wrong API token").wait_for()
    page.screenshot(path=str(artifacts / "wrong-token.png"))
    assert path_of(page) == "/login"

    token_box.fill("")
    page.keyboard.type(TOKEN)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Sign in"
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: urllib.parse.urlsplit(url).path == "/")
    assert page.evaluate(FETCH_CALLS) == 200  # the cookie signs the console's API calls
    page.wait_for_timeout(500)
    assert path_of(page) == "/"  # and the console stays: no bounce back to /login
    page.screenshot(path=str(artifacts / "console-signed-in.png"))
    cookies = [c for c in context.cookies() if c["name"] == "callbridge_session"]
    assert len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert "callbridge_session" not in page.evaluate("document.cookie")  # no script can read it


def test_the_one_click_link_signs_in_and_leaves_no_token_in_the_address_bar(server, browser_factory):
    browser = browser_factory()
    context, page = new_page(browser)
    page.goto(console_url(server, "/login?next=%2F%23%2Fhistory#token=" + urllib.parse.quote(TOKEN)))
    page.wait_for_url(lambda url: urllib.parse.urlsplit(url).path == "/")
    assert TOKEN not in page.url and "token=" not in page.url
    assert urllib.parse.urlsplit(page.url).fragment == "/history"  # next kept the console's own route
    assert page.evaluate(FETCH_CALLS) == 200
    history = page.evaluate("history.length")
    assert history <= 2  # the /login#token entry was replaced, not kept behind the console


@pytest.mark.parametrize("next_path", ["//evil.example/x", "/\\evil.example", "https://evil.example/"])
def test_next_never_leaves_this_site(server, browser_factory, next_path):
    browser = browser_factory()
    context, page = new_page(browser)
    page.goto(console_url(server, "/login?next=" + urllib.parse.quote(next_path, safe="")))
    page.get_by_label("API token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: urllib.parse.urlsplit(url).path == "/")
    assert urllib.parse.urlsplit(page.url).netloc == f"127.0.0.1:{server.http_port}"


def test_without_token_or_cookie_the_api_answers_401(server, browser_factory):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(console_url(server, "/api/calls"), timeout=5)
    assert refused.value.code == 401
    browser = browser_factory()
    signed_in, page = new_page(browser)
    page.goto(console_url(server, "/login#token=" + urllib.parse.quote(TOKEN)))
    page.wait_for_url(lambda url: urllib.parse.urlsplit(url).path == "/")
    assert page.evaluate(FETCH_CALLS) == 200
    fresh, stranger = new_page(browser)  # another context: no cookie
    stranger.goto(console_url(server, "/login"))
    assert stranger.evaluate(FETCH_CALLS) == 401
    # Signing out (the console's button calls this) ends the session in that browser.
    assert page.evaluate("async () => (await fetch('/api/session', {method: 'DELETE'})).status") == 204
    assert page.evaluate(FETCH_CALLS) == 401
