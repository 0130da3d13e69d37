"""Tests for SIP Digest authentication (client and server side)."""

from __future__ import annotations

import hashlib
from itertools import count

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.sip.digest import (
    Challenge,
    Credentials,
    DigestError,
    DigestVerifier,
    VerifyStatus,
    build_authorization,
    choose_challenge,
    compute_response,
    format_challenge,
    format_credentials,
    parse_auth_header,
    parse_challenge,
    parse_challenges,
    parse_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "callbridge.test"
USERS = {"alice": "s3cret", "bob": "hunter2"}
T0 = 1_700_000_000.0


def lookup(username: str) -> str | None:
    return USERS.get(username)


def counter_bytes():
    """Deterministic salt source: different on every call."""
    numbers = count()
    return lambda n: next(numbers).to_bytes(n, "big")


def make_verifier(**kwargs) -> DigestVerifier:
    kwargs.setdefault("random_bytes", counter_bytes())
    return DigestVerifier(REALM, SECRET, **kwargs)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# ---------------------------------------------------------------- known answers

RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", method="GET",
               uri="/dir/index.html", qop="auth", nc="00000001",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")


def test_rfc7616_example_md5() -> None:
    assert compute_response(algorithm="MD5", **RFC7616) == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_example_sha256() -> None:
    expected = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert compute_response(algorithm="sha-256", **RFC7616) == expected


def test_md5_no_qop_by_hand() -> None:
    ha1 = md5("alice:atlanta.example.com:pw")
    ha2 = md5("INVITE:sip:bob@biloxi.example.com")
    expected = md5(f"{ha1}:abc123:{ha2}")
    got = compute_response(algorithm="MD5", username="alice", realm="atlanta.example.com",
                           password="pw", nonce="abc123", method="INVITE",
                           uri="sip:bob@biloxi.example.com")
    assert got == expected


def test_md5_sess_by_hand() -> None:
    ha1 = md5(f"{md5('alice:r:pw')}:n:c")
    ha2 = md5("REGISTER:sip:r")
    expected = md5(f"{ha1}:n:0000000a:c:auth:{ha2}")
    got = compute_response(algorithm="MD5-sess", username="alice", realm="r", password="pw",
                           nonce="n", method="REGISTER", uri="sip:r", qop="auth",
                           nc="0000000a", cnonce="c")
    assert got == expected


def test_sha256_sess_by_hand() -> None:
    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()
    ha1 = h(f"{h('u:r:p')}:n:c")
    expected = h(f"{ha1}:n:00000001:c:auth:{h('BYE:sip:x')}")
    got = compute_response(algorithm="SHA-256-sess", username="u", realm="r", password="p",
                           nonce="n", method="BYE", uri="sip:x", qop="auth", nc="00000001",
                           cnonce="c")
    assert got == expected


def test_compute_response_rejects_unsupported() -> None:
    with pytest.raises(DigestError, match="auth-int"):
        compute_response(algorithm="MD5", username="u", realm="r", password="p", nonce="n",
                         method="INVITE", uri="sip:x", qop="auth-int", nc="00000001", cnonce="c")
    with pytest.raises(DigestError, match="unsupported"):
        compute_response(algorithm="AKAv1-MD5", username="u", realm="r", password="p",
                         nonce="n", method="INVITE", uri="sip:x")
    with pytest.raises(DigestError, match="cnonce"):
        compute_response(algorithm="MD5-sess", username="u", realm="r", password="p",
                         nonce="n", method="INVITE", uri="sip:x")


# ---------------------------------------------------------------- parsing


def test_parse_challenge_typical() -> None:
    ch = parse_challenge('Digest realm="x", nonce="y", algorithm=SHA-256, qop="auth", '
                         'opaque="z", stale=true')
    assert ch == Challenge(realm="x", nonce="y", algorithm="SHA-256", qop=("auth",),
                           opaque="z", stale=True)


def test_parse_challenge_oddities() -> None:
    # lower-case scheme, no spaces, spaces around '=', unquoted qop, mixed case names
    ch = parse_challenge('digest REALM = "a b" ,Nonce="n\\"q",algorithm=md5-SESS,'
                         'qop=auth,auth-int , STALE=TRUE')
    assert ch.realm == "a b" and ch.nonce == 'n"q'
    assert ch.algorithm == "MD5-sess" and ch.qop == ("auth", "auth-int") and ch.stale
    assert parse_challenge('Digest realm="r", nonce="n"').algorithm == "MD5"
    spaced = parse_challenge('Digest realm="r",\r\n\tnonce="n", qop="auth, auth-int"')
    assert spaced.qop == ("auth", "auth-int") and not spaced.stale


def test_parse_several_challenges_in_one_value() -> None:
    value = ('Basic realm="web", Digest realm="r", nonce="1", algorithm=SHA-256, '
             'Digest realm="r", nonce="2", algorithm=MD5')
    assert [(c.nonce, c.algorithm) for c in parse_challenges(value)] == [
        ("1", "SHA-256"), ("2", "MD5")]
    assert [scheme for scheme, _ in parse_auth_header(value)] == ["Basic", "Digest", "Digest"]


def test_parse_credentials_sipp_style() -> None:
    # SIPp writes no space after commas and puts sip:host:port in uri.
    value = ('Digest username="alice",realm="callbridge.test",uri="sip:10.0.0.1:5060",'
             'nonce="abc",response="0123abcd",algorithm=MD5,cnonce="6b8b4567",'
             'qop=auth,nc=00000001')
    creds = parse_credentials(value)
    assert creds.uri == "sip:10.0.0.1:5060" and creds.nc == "00000001"
    assert creds.qop == "auth" and creds.cnonce == "6b8b4567"


def test_parse_credentials_unquoted_uri_and_backslash_escapes() -> None:
    creds = parse_credentials('Digest username="a\\\\b", realm="r", nonce=n, uri=sip:x@y, '
                              'response="f"')
    assert creds.username == "a\\b" and creds.uri == "sip:x@y" and creds.nonce == "n"
    assert creds.algorithm == "MD5" and creds.qop is None


@pytest.mark.parametrize("value", [
    "",
    "   ",
    "Digest",  # no parameters at all
    'Digest realm="unterminated',
    'Digest realm="r" nonce="n"',  # missing comma
    'Digest realm=',
    'Digest realm="r", realm="s", nonce="n"',
    'Digest nonce="n"',  # no realm
    '"Digest" realm="r"',
    'Basic realm="r"',  # no Digest challenge
    'Digest realm="r", =x, nonce="n"',
])
def test_parse_challenge_garbage(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)


@pytest.mark.parametrize("value", [
    'Digest username="a", realm="r", nonce="n", uri="sip:x"',  # no response
    'Digest username="a", realm="r", nonce="n", uri="sip:x", response="1", '
    'Digest username="b", realm="r", nonce="n", uri="sip:x", response="1"',
    "Bearer abc",
])
def test_parse_credentials_garbage(value: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(value)


@given(st.text(max_size=120))
def test_parsers_only_raise_digest_error(value: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(value)
        except DigestError:
            pass


_SAFE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=20)


@given(realm=_SAFE, nonce=_SAFE, opaque=st.none() | _SAFE, stale=st.booleans())
def test_challenge_format_parse_round_trip(realm: str, nonce: str, opaque: str | None,
                                           stale: bool) -> None:
    ch = Challenge(realm=realm, nonce=nonce, algorithm="SHA-256", qop=("auth",),
                   opaque=opaque, stale=stale)
    assert parse_challenge(format_challenge(ch)) == ch


@given(username=_SAFE, uri=_SAFE)
def test_credentials_format_parse_round_trip(username: str, uri: str) -> None:
    creds = Credentials(username=username, realm="r", nonce="n", uri=uri, response="ab",
                        algorithm="MD5", cnonce="c", qop="auth", nc="00000001", opaque="o")
    assert parse_credentials(format_credentials(creds)) == creds


def test_format_refuses_header_injection() -> None:
    with pytest.raises(DigestError):
        format_challenge(Challenge(realm="r\r\nVia: evil", nonce="n"))


# ---------------------------------------------------------------- client side


def test_build_authorization_with_qop() -> None:
    challenge = 'Digest realm="http-auth@example.org", qop="auth, auth-int", ' \
                'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", ' \
                'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    value = build_authorization(challenge, method="GET", uri="/dir/index.html",
                                username="Mufasa", password="Circle of Life",
                                cnonce=RFC7616["cnonce"], nc=1)
    creds = parse_credentials(value)
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert creds.qop == "auth" and creds.nc == "00000001" and creds.algorithm == "SHA-256"
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert "qop=auth," in value and "nc=00000001" in value  # tokens, not quoted


def test_build_authorization_without_qop_is_rfc2069() -> None:
    value = build_authorization(Challenge(realm="r", nonce="n"), method="INVITE",
                                uri="sip:bob@b", username="alice", password="pw", cnonce="c")
    creds = parse_credentials(value)
    assert creds.qop is None and creds.cnonce is None and creds.nc is None
    assert creds.response == md5(f"{md5('alice:r:pw')}:n:{md5('INVITE:sip:bob@b')}")


def test_build_authorization_refuses_auth_int_only_and_unknown_algorithm() -> None:
    with pytest.raises(DigestError, match="qop"):
        build_authorization(Challenge(realm="r", nonce="n", qop=("auth-int",)), method="INVITE",
                            uri="sip:x", username="u", password="p", cnonce="c")
    with pytest.raises(DigestError, match="algorithm"):
        build_authorization(Challenge(realm="r", nonce="n", algorithm="AKAv1-MD5"),
                            method="INVITE", uri="sip:x", username="u", password="p", cnonce="c")


def test_choose_strongest_and_first() -> None:
    values = ['Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
              'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
              'Digest realm="r", nonce="c", algorithm=AKAv1-MD5']
    assert choose_challenge(values).nonce == "b"
    assert choose_challenge(values, prefer="first").nonce == "a"
    with pytest.raises(DigestError):
        choose_challenge(values, realm="other")
    with pytest.raises(DigestError):
        choose_challenge(['Digest realm="r", nonce="c", algorithm=SHA-512-256'])
    # -sess without qop has no cnonce to use, so it is skipped.
    assert choose_challenge(['Digest realm="r", nonce="s", algorithm=SHA-256-sess',
                             'Digest realm="r", nonce="m"']).nonce == "m"


# ---------------------------------------------------------------- server side


def client_answer(challenge_value: str, *, username: str = "alice", password: str = "s3cret",
                  method: str = "INVITE", uri: str = "sip:service@203.0.113.5",
                  nc: int = 1) -> str:
    return build_authorization(challenge_value, method=method, uri=uri, username=username,
                               password=password, cnonce="0a4f113b", nc=nc)


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"])
def test_round_trip_success(algorithm: str) -> None:
    verifier = make_verifier(algorithms=[algorithm])
    challenge = verifier.challenge(T0)
    assert parse_challenge(challenge).algorithm == algorithm
    result = verifier.verify(client_answer(challenge), method="INVITE", password_lookup=lookup,
                             now=T0 + 1)
    assert result.ok and result.username == "alice" and result.status is VerifyStatus.OK


def test_challenges_one_per_algorithm_preferred_first() -> None:
    values = make_verifier().challenges(T0)
    assert [parse_challenge(v).algorithm for v in values] == ["SHA-256", "MD5"]
    assert all(parse_challenge(v).qop == ("auth",) for v in values)


def test_stale_flag_in_challenge() -> None:
    verifier = make_verifier()
    assert parse_challenge(verifier.challenge(T0, stale=True)).stale
    assert not parse_challenge(verifier.challenge(T0)).stale
    with pytest.raises(ValueError):
        make_verifier(algorithms=["MD5"]).challenge(T0, algorithm="SHA-256")


def test_nonces_differ_and_are_unforgeable() -> None:
    verifier = make_verifier()
    first, second = (parse_challenge(verifier.challenge(T0)).nonce for _ in range(2))
    assert first != second
    assert verifier.nonce_issued_at(first) == pytest.approx(T0)
    other = DigestVerifier(REALM, b"another secret", random_bytes=counter_bytes())
    assert other.nonce_issued_at(first) is None
    elsewhere = DigestVerifier("other.realm", SECRET, random_bytes=counter_bytes())
    assert elsewhere.nonce_issued_at(first) is None


def test_wrong_password_and_unknown_user() -> None:
    verifier = make_verifier()
    challenge = verifier.challenge(T0)
    wrong = verifier.verify(client_answer(challenge, password="nope"), method="INVITE",
                            password_lookup=lookup, now=T0 + 1)
    assert wrong.status is VerifyStatus.BAD_CREDENTIALS and wrong.username == "alice"
    ghost = verifier.verify(client_answer(challenge, username="mallory"), method="INVITE",
                            password_lookup=lookup, now=T0 + 1)
    assert ghost.status is VerifyStatus.BAD_CREDENTIALS and "unknown" in ghost.reason


def test_method_is_part_of_the_hash() -> None:
    verifier = make_verifier()
    value = client_answer(verifier.challenge(T0), method="REGISTER")
    result = verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 1)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_stale_after_lifetime() -> None:
    verifier = make_verifier(nonce_lifetime=300)
    value = client_answer(verifier.challenge(T0))
    late = verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 301)
    assert late.status is VerifyStatus.STALE
    # A wrong password with an old nonce is still just bad credentials.
    bad = client_answer(verifier.challenge(T0), password="nope")
    assert verifier.verify(bad, method="INVITE", password_lookup=lookup,
                           now=T0 + 301).status is VerifyStatus.BAD_CREDENTIALS
    just_in_time = client_answer(verifier.challenge(T0))
    assert verifier.verify(just_in_time, method="INVITE", password_lookup=lookup,
                           now=T0 + 300).ok


def test_nonce_from_the_future_is_stale() -> None:
    verifier = make_verifier()
    value = client_answer(verifier.challenge(T0 + 60))
    assert verifier.verify(value, method="INVITE", password_lookup=lookup,
                           now=T0).status is VerifyStatus.STALE


def test_tampered_nonce() -> None:
    verifier = make_verifier()
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    tampered = ("B" if nonce[0] != "B" else "C") + nonce[1:]
    forged = Challenge(realm=REALM, nonce=tampered, algorithm="SHA-256", qop=("auth",))
    # Someone without the password cannot pass, whatever the nonce.
    bad = verifier.verify(client_answer(forged, password="guess"), method="INVITE",
                          password_lookup=lookup, now=T0 + 1)
    assert bad.status is VerifyStatus.BAD_CREDENTIALS
    # With the password but a nonce we never issued: re-challenge, never OK.
    good = verifier.verify(client_answer(forged), method="INVITE", password_lookup=lookup,
                           now=T0 + 1)
    assert good.status is VerifyStatus.STALE
    garbage = Challenge(realm=REALM, nonce="!!not base64!!", algorithm="SHA-256", qop=("auth",))
    assert verifier.verify(client_answer(garbage), method="INVITE", password_lookup=lookup,
                           now=T0 + 1).status is VerifyStatus.STALE


def test_sipp_style_uri_differs_from_request_uri() -> None:
    verifier = make_verifier(algorithms=["MD5"])
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    # Written the way SIPp does: no spaces, uri is sip:host:port, not the Request-URI.
    cnonce, nc, uri = "6b8b4567", "00000001", "sip:203.0.113.5:5060"
    response = compute_response(algorithm="MD5", username="alice", realm=REALM,
                                password="s3cret", nonce=nonce, method="INVITE", uri=uri,
                                qop="auth", nc=nc, cnonce=cnonce)
    value = (f'Digest username="alice",realm="{REALM}",cnonce="{cnonce}",nc={nc},qop=auth,'
             f'uri="{uri}",nonce="{nonce}",response="{response}",algorithm=MD5')
    assert verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 2).ok


def test_no_qop_mode_accepted_unless_required() -> None:
    verifier = make_verifier(algorithms=["MD5"])
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    value = build_authorization(Challenge(realm=REALM, nonce=nonce), method="INVITE",
                                uri="sip:svc@h", username="bob", password="hunter2", cnonce="x")
    assert "qop" not in value
    assert verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 1).ok
    # No nc means no replay tracking: the same header passes twice.
    assert verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 2).ok
    strict = DigestVerifier(REALM, SECRET, algorithms=["MD5"], require_qop=True)
    assert strict.verify(value, method="INVITE", password_lookup=lookup,
                         now=T0 + 1).status is VerifyStatus.MALFORMED


def test_nc_replay_and_increase() -> None:
    verifier = make_verifier()
    challenge = verifier.challenge(T0)
    first = client_answer(challenge, nc=1)
    assert verifier.verify(first, method="INVITE", password_lookup=lookup, now=T0 + 1).ok
    replay = verifier.verify(first, method="INVITE", password_lookup=lookup, now=T0 + 2)
    assert replay.status is VerifyStatus.STALE and "replay" in replay.reason
    second = client_answer(challenge, nc=2)
    assert verifier.verify(second, method="INVITE", password_lookup=lookup, now=T0 + 3).ok
    lenient = make_verifier(track_nc=False)
    value = client_answer(lenient.challenge(T0))
    for _ in range(3):
        assert lenient.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 1).ok


def test_nc_tracking_is_bounded() -> None:
    verifier = make_verifier(max_tracked_nonces=3)
    for _ in range(10):
        value = client_answer(verifier.challenge(T0))
        assert verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0).ok
    assert len(verifier._last_nc) == 3


def test_wrong_realm() -> None:
    verifier = make_verifier()
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    value = client_answer(Challenge(realm="elsewhere", nonce=nonce, qop=("auth",)))
    result = verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 1)
    assert result.status is VerifyStatus.WRONG_REALM


@pytest.mark.parametrize("value", [
    "garbage",
    'Digest username="alice"',
    'Basic YWxpY2U6czNjcmV0',
    f'Digest username="alice", realm="{REALM}", nonce="n", uri="sip:x", response="r", '
    'qop=auth-int, nc=00000001, cnonce="c"',
    f'Digest username="alice", realm="{REALM}", nonce="n", uri="sip:x", response="r", '
    'qop=auth, nc=1, cnonce="c"',
    f'Digest username="alice", realm="{REALM}", nonce="n", uri="sip:x", response="r", '
    'qop=auth, nc=00000001',
    f'Digest username="alice", realm="{REALM}", nonce="n", uri="", response="r"',
    f'Digest username="alice", realm="{REALM}", nonce="n", uri="sip:x", response="r", '
    'algorithm=SHA-512-256',
])
def test_malformed_credentials(value: str) -> None:
    result = make_verifier().verify(value, method="INVITE", password_lookup=lookup, now=T0)
    assert result.status is VerifyStatus.MALFORMED and result.reason


def test_disabled_algorithm_is_refused() -> None:
    verifier = make_verifier(algorithms=["SHA-256"])
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    value = client_answer(Challenge(realm=REALM, nonce=nonce, algorithm="MD5", qop=("auth",)))
    assert verifier.verify(value, method="INVITE", password_lookup=lookup,
                           now=T0 + 1).status is VerifyStatus.MALFORMED


def test_non_ascii_response_does_not_crash() -> None:
    verifier = make_verifier(algorithms=["MD5"])
    nonce = parse_challenge(verifier.challenge(T0)).nonce
    value = (f'Digest username="alice", realm="{REALM}", nonce="{nonce}", uri="sip:x", '
             'response="\u00e9\u00e9"')
    result = verifier.verify(value, method="INVITE", password_lookup=lookup, now=T0 + 1)
    assert result.status is VerifyStatus.BAD_CREDENTIALS


def test_uppercase_hex_response_accepted() -> None:
    verifier = make_verifier(algorithms=["MD5"])
    value = client_answer(verifier.challenge(T0))
    creds = parse_credentials(value)
    upper = value.replace(creds.response, creds.response.upper())
    assert verifier.verify(upper, method="INVITE", password_lookup=lookup, now=T0 + 1).ok


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        DigestVerifier(REALM, b"")
    with pytest.raises(ValueError):
        DigestVerifier(REALM, SECRET, algorithms=["SHA-512-256"])
    with pytest.raises(ValueError):
        DigestVerifier(REALM, SECRET, algorithms=[])
    with pytest.raises(ValueError):
        make_verifier().challenge(-1.0)
