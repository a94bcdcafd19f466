"""Token verification (HS256, RS256, ES256), channel authorization and token minting."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from neurelay.auth import (
    Principal,
    Revocations,
    TokenVerifier,
    issued_before,
    may_publish,
    may_subscribe,
    mint_token,
)
from neurelay.config import AuthSettings
from neurelay.errors import ConfigError, ProtocolError
from neurelay.protocol.channels import parse_channel
from neurelay.protocol.codes import ErrorCode

SECRET = "auth-test-secret-" + "s" * 64  # long enough for HS512 too
OTHER_SECRET = "another-test-secret-" + "o" * 32


class KeyPair:
    def __init__(self, private_key: Any) -> None:
        self.private_pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_pem = (
            private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )


@pytest.fixture(scope="module")
def rsa_keys() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def other_rsa_keys() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()))


def hs256(**settings: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(secret=SECRET, **settings))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 3600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def refusal(verifier: TokenVerifier, token: str) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        verifier.verify(token)
    return info.value.code


def principal(
    user: str = "alice", subscribe: tuple[str, ...] = (), publish: tuple[str, ...] = ()
) -> Principal:
    return Principal(user=user, subscribe=subscribe, publish=publish, expires_at=0.0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- accepted tokens --------------------------------------------------------------------------


def test_hs256_token_yields_its_principal() -> None:
    exp = int(time.time()) + 600
    token = sign(claims(exp=exp, channels=["agent:*"], publish=["agent:1"]))

    assert hs256().verify(token) == Principal(
        user="alice", subscribe=("agent:*",), publish=("agent:1",), expires_at=float(exp)
    )


def test_rs256_token_is_verified_with_the_public_key(rsa_keys: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key=rsa_keys.public_pem))
    token = sign(claims(channels=["agent:*"]), rsa_keys.private_pem, "RS256")

    assert verifier.verify(token).subscribe == ("agent:*",)


def test_es256_token_is_verified_with_the_public_key(ec_keys: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="ES256", public_key=ec_keys.public_pem))
    token = sign(claims(sub="bob"), ec_keys.private_pem, "ES256")

    assert verifier.verify(token).user == "bob"


def test_public_key_can_be_read_from_a_file(tmp_path: Path, rsa_keys: KeyPair) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text(rsa_keys.public_pem)
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key_file=str(key_file)))

    assert verifier.verify(sign(claims(), rsa_keys.private_pem, "RS256")).user == "alice"


def test_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    verifier = TokenVerifier(AuthSettings(secret_file=str(secret_file)))

    assert verifier.verify(sign(claims())).user == "alice"


def test_missing_channels_and_publish_claims_grant_no_patterns() -> None:
    found = hs256().verify(sign(claims()))

    assert (found.subscribe, found.publish) == ((), ())


def test_null_channels_and_publish_claims_grant_no_patterns() -> None:
    found = hs256().verify(sign({**claims(), "channels": None, "publish": None}))

    assert (found.subscribe, found.publish) == ((), ())


def test_expires_at_ms_is_exp_in_milliseconds() -> None:
    assert principal().expires_at_ms == 0
    assert Principal("a", (), (), 1_700_000_000.5).expires_at_ms == 1_700_000_000_500


# -- required claims and expiry ---------------------------------------------------------------


def test_token_without_exp_is_refused() -> None:
    assert refusal(hs256(), sign({"sub": "alice"})) is ErrorCode.AUTH_FAILED


def test_token_without_sub_is_refused() -> None:
    assert refusal(hs256(), sign({"exp": int(time.time()) + 60})) is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("sub", [123, "", "u" * 257, ["alice"], {"id": "alice"}])
def test_sub_that_is_not_a_short_string_is_refused(sub: object) -> None:
    assert refusal(hs256(), sign(claims(sub=sub))) is ErrorCode.AUTH_FAILED


def test_sub_of_256_characters_is_accepted() -> None:
    assert hs256().verify(sign(claims(sub="u" * 256))).user == "u" * 256


def test_expired_token_is_token_expired() -> None:
    token = sign(claims(exp=int(time.time()) - 60))

    assert refusal(hs256(), token) is ErrorCode.TOKEN_EXPIRED


def test_minted_token_with_negative_ttl_is_token_expired() -> None:
    assert refusal(hs256(), mint_token(SECRET, "alice", ttl_seconds=-60)) is (
        ErrorCode.TOKEN_EXPIRED
    )


def test_leeway_tolerates_a_recently_expired_token() -> None:
    token = sign(claims(exp=int(time.time()) - 30))

    assert hs256(leeway_seconds=120).verify(token).user == "alice"


def test_token_not_yet_valid_is_refused() -> None:
    token = sign(claims(nbf=int(time.time()) + 600))

    assert refusal(hs256(), token) is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("exp", ["tomorrow", [1], {"t": 1}])
def test_non_numeric_exp_is_refused(exp: object) -> None:
    assert refusal(hs256(), sign(claims(exp=exp))) is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": 1.8e16},  # ms would overflow 64 bits
        {"exp": 2**70},
        {"exp": float("inf")},
        {"exp": float("nan")},
        {"iat": True},
        {"exp": int(time.time()) + 11 * 366 * 86_400},
        {"iat": float("inf")},
        {"iat": -(2**70)},
        {"iat": 1e300},
        {"nbf": float("-inf")},
        {"nbf": -5},
        {"nbf": float("nan")},
        {"exp": True},  # not read as 1, an expired time
        {"exp": False},
        {"exp": -5},  # not an expired time either
        {"exp": -1e300},
        {"nbf": True},
    ],
    ids=repr,
)
def test_time_claims_out_of_sane_bounds_are_auth_failed(overrides: dict[str, Any]) -> None:
    assert refusal(hs256(), sign(claims(**overrides))) is ErrorCode.AUTH_FAILED


def test_exp_of_zero_is_a_time_long_past_and_token_expired() -> None:
    assert refusal(hs256(), sign(claims(exp=0))) is ErrorCode.TOKEN_EXPIRED


def test_token_living_ten_years_is_accepted() -> None:
    exp = int(time.time()) + 10 * 365 * 86_400

    assert hs256().verify(sign(claims(exp=exp))).expires_at_ms == exp * 1000


# -- forged, foreign and malformed tokens -----------------------------------------------------


def test_token_signed_with_another_secret_is_refused() -> None:
    assert refusal(hs256(), sign(claims(), OTHER_SECRET)) is ErrorCode.AUTH_FAILED


def test_token_signed_with_another_rsa_key_is_refused(
    rsa_keys: KeyPair, other_rsa_keys: KeyPair
) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key=rsa_keys.public_pem))

    token = sign(claims(), other_rsa_keys.private_pem, "RS256")

    assert refusal(verifier, token) is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        "a.b",
        "....",
        "eyJhbGciOiJIUzI1NiJ9.e30.",
        "\u00e9\u00e9.\u00e9.\u00e9",
        "x" * 10_000,
    ],
)
def test_garbage_token_is_refused_as_auth_failed(token: str) -> None:
    assert refusal(hs256(), token) is ErrorCode.AUTH_FAILED


def test_tampered_payload_is_refused() -> None:
    header, _, signature = sign(claims(sub="alice")).split(".")
    forged = _b64(json.dumps(claims(sub="admin")).encode())

    assert refusal(hs256(), f"{header}.{forged}.{signature}") is ErrorCode.AUTH_FAILED


def test_unsigned_alg_none_token_is_refused() -> None:
    token = jwt.encode(claims(), None, algorithm="none")

    assert refusal(hs256(), token) is ErrorCode.AUTH_FAILED


def test_hand_made_alg_none_token_with_a_signature_is_refused() -> None:
    header = _b64(b'{"alg":"none","typ":"JWT"}')
    payload = _b64(json.dumps(claims()).encode())

    assert refusal(hs256(), f"{header}.{payload}.") is ErrorCode.AUTH_FAILED
    assert refusal(hs256(), f"{header}.{payload}.c2ln") is ErrorCode.AUTH_FAILED


def test_hs256_token_signed_with_the_rsa_public_key_is_refused_by_an_rs256_gateway(
    rsa_keys: KeyPair,
) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key=rsa_keys.public_pem))
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64(json.dumps(claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    mac = hmac.new(rsa_keys.public_pem.encode(), signing_input, hashlib.sha256).digest()

    assert refusal(verifier, f"{header}.{payload}.{_b64(mac)}") is ErrorCode.AUTH_FAILED


def test_hs512_token_with_the_right_secret_is_refused_by_an_hs256_gateway() -> None:
    assert refusal(hs256(), sign(claims(), SECRET, "HS512")) is ErrorCode.AUTH_FAILED


def test_es256_token_is_refused_by_an_rs256_gateway(rsa_keys: KeyPair, ec_keys: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key=rsa_keys.public_pem))

    token = sign(claims(), ec_keys.private_pem, "ES256")

    assert refusal(verifier, token) is ErrorCode.AUTH_FAILED


def test_rs256_token_is_refused_by_an_hs256_gateway(rsa_keys: KeyPair) -> None:
    token = sign(claims(), rsa_keys.private_pem, "RS256")

    assert refusal(hs256(), token) is ErrorCode.AUTH_FAILED


def test_token_whose_payload_is_not_an_object_is_refused() -> None:
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64(b"[1, 2]")
    mac = hmac.new(SECRET.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()

    assert refusal(hs256(), f"{header}.{payload}.{_b64(mac)}") is ErrorCode.AUTH_FAILED


# -- issuer and audience ----------------------------------------------------------------------


def test_token_from_the_configured_issuer_is_accepted() -> None:
    assert hs256(issuer="https://idp").verify(sign(claims(iss="https://idp"))).user == "alice"


@pytest.mark.parametrize("iss", [None, "https://evil", ""])
def test_token_from_another_or_no_issuer_is_refused(iss: str | None) -> None:
    assert refusal(hs256(issuer="https://idp"), sign(claims(iss=iss))) is ErrorCode.AUTH_FAILED


def test_token_for_the_configured_audience_is_accepted() -> None:
    assert hs256(audience="neurelay").verify(sign(claims(aud="neurelay"))).user == "alice"


def test_token_listing_the_configured_audience_among_others_is_accepted() -> None:
    token = sign(claims(aud=["billing", "neurelay"]))

    assert hs256(audience="neurelay").verify(token).user == "alice"


@pytest.mark.parametrize("aud", [None, "billing", ["billing"]])
def test_token_for_another_or_no_audience_is_refused(aud: object) -> None:
    assert refusal(hs256(audience="neurelay"), sign(claims(aud=aud))) is ErrorCode.AUTH_FAILED


def test_audience_claim_is_ignored_when_no_audience_is_configured() -> None:
    assert hs256().verify(sign(claims(aud="billing"))).user == "alice"


# -- channels / publish claims ----------------------------------------------------------------


@pytest.mark.parametrize("claim", ["channels", "publish"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param("agent:*", id="string"),
        pytest.param({"agent": "*"}, id="object"),
        pytest.param(1, id="integer"),
        pytest.param(True, id="bool"),
        pytest.param([1], id="list-of-int"),
        pytest.param([None], id="list-of-null"),
        pytest.param([["agent:*"]], id="nested-list"),
        pytest.param([""], id="empty-pattern"),
        pytest.param(["a" * 257], id="pattern-257-chars"),
        pytest.param(["agent:*"] * 1001, id="1001-patterns"),
    ],
)
def test_malformed_pattern_claim_is_refused(claim: str, value: object) -> None:
    assert refusal(hs256(), sign(claims(**{claim: value}))) is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("claim", ["channels", "publish"])
def test_pattern_claim_of_1000_patterns_is_accepted(claim: str) -> None:
    patterns = [f"agent:{i}" for i in range(1000)]

    found = hs256().verify(sign(claims(**{claim: patterns})))

    assert len(found.subscribe if claim == "channels" else found.publish) == 1000


# -- configuration of the key -----------------------------------------------------------------


def test_hmac_algorithm_without_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="secret"):
        TokenVerifier(AuthSettings())


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_algorithm_without_key_is_a_config_error(algorithm: str) -> None:
    with pytest.raises(ConfigError, match="public_key"):
        TokenVerifier(AuthSettings(algorithm=algorithm))


def test_missing_secret_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier(AuthSettings(secret_file=str(tmp_path / "absent")))


def test_blank_secret_file_is_a_config_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("\n")

    with pytest.raises(ConfigError, match="empty"):
        TokenVerifier(AuthSettings(secret_file=str(secret_file)))


def test_empty_secret_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="empty"):
        TokenVerifier(AuthSettings(secret=""))


@pytest.mark.parametrize("case", ["garbage-rsa-key", "rsa-key-for-es256", "pem-as-hmac-secret"])
def test_key_unusable_for_the_algorithm_is_a_config_error_at_construction(
    case: str, rsa_keys: KeyPair
) -> None:
    settings = {
        "garbage-rsa-key": AuthSettings(algorithm="RS256", public_key="not a PEM key"),
        "rsa-key-for-es256": AuthSettings(algorithm="ES256", public_key=rsa_keys.public_pem),
        "pem-as-hmac-secret": AuthSettings(algorithm="HS256", secret=rsa_keys.public_pem),
    }[case]

    with pytest.raises(ConfigError, match="unusable"):
        TokenVerifier(settings)


# -- may_subscribe ----------------------------------------------------------------------------


@pytest.mark.parametrize("patterns", [(), ("agent:*",)])
def test_system_is_readable_by_every_user(patterns: tuple[str, ...]) -> None:
    assert may_subscribe(principal(subscribe=patterns), parse_channel("system"))


def test_own_user_channel_is_readable_without_any_pattern() -> None:
    assert may_subscribe(principal("alice"), parse_channel("user:alice"))


@pytest.mark.parametrize("patterns", [(), ("user:*",), ("*",), ("user:bob",), ("user:?ob",)])
def test_another_users_channel_is_never_readable(patterns: tuple[str, ...]) -> None:
    assert not may_subscribe(principal("alice", subscribe=patterns), parse_channel("user:bob"))


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        (("agent:*",), "agent:1", True),
        (("agent:*",), "agents:1", False),
        (("agent:*",), "conversation:1", False),
        (("conversation:42",), "conversation:42", True),
        (("conversation:42",), "conversation:421", False),
        (("conversation:4?",), "conversation:42", True),
        (("conversation:4?",), "conversation:420", False),
        (("conversation:[12]",), "conversation:2", True),
        (("agent:A*",), "agent:a1", False),
        (("*",), "metrics:cpu", True),
        (("metrics:*", "agent:7"), "agent:7", True),
        ((), "agent:1", False),
    ],
)
def test_subscribe_patterns_are_case_sensitive_globs(
    patterns: tuple[str, ...], channel: str, allowed: bool
) -> None:
    assert may_subscribe(principal(subscribe=patterns), parse_channel(channel)) is allowed


def test_publish_patterns_do_not_grant_subscription() -> None:
    assert not may_subscribe(principal(publish=("agent:*",)), parse_channel("agent:1"))


# -- may_publish ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "channel", "allowed"),
    [
        (("agent:*",), "agent:1", True),
        (("agent:*",), "conversation:1", False),
        (("agent:1",), "agent:10", False),
        (("system",), "system", True),
        ((), "system", False),
        ((), "user:alice", False),
        (("*",), "conversation:9", True),
    ],
)
def test_publish_is_allowed_only_by_a_matching_publish_pattern(
    patterns: tuple[str, ...], channel: str, allowed: bool
) -> None:
    assert may_publish(principal(publish=patterns), parse_channel(channel)) is allowed


def test_subscribe_patterns_do_not_grant_publishing() -> None:
    assert not may_publish(principal(subscribe=("agent:*",)), parse_channel("agent:1"))


# -- mint_token -------------------------------------------------------------------------------


def test_minted_token_carries_the_given_claims() -> None:
    token = mint_token(
        SECRET,
        "alice",
        channels=["agent:*"],
        publish=("agent:1",),
        ttl_seconds=90,
        issuer="https://idp",
        audience="neurelay",
        now=1_000_000.0,
    )

    decoded = jwt.decode(token, options={"verify_signature": False})

    assert decoded == {
        "sub": "alice",
        "iat": 1_000_000,
        "exp": 1_000_090,
        "channels": ["agent:*"],
        "publish": ["agent:1"],
        "iss": "https://idp",
        "aud": "neurelay",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_minted_token_omits_issuer_and_audience_when_not_given() -> None:
    decoded = jwt.decode(mint_token(SECRET, "alice"), options={"verify_signature": False})

    assert "iss" not in decoded
    assert "aud" not in decoded


def test_minted_token_is_accepted_by_a_verifier_with_the_same_settings() -> None:
    token = mint_token(
        SECRET, "alice", channels=["agent:*"], issuer="https://idp", audience="neurelay"
    )

    found = hs256(issuer="https://idp", audience="neurelay").verify(token)

    assert (found.user, found.subscribe) == ("alice", ("agent:*",))


def test_minted_rs256_token_is_accepted_by_an_rs256_verifier(rsa_keys: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="RS256", public_key=rsa_keys.public_pem))

    token = mint_token(rsa_keys.private_pem, "carol", algorithm="RS256", publish=["agent:*"])

    assert verifier.verify(token).publish == ("agent:*",)


def test_minted_es256_token_is_accepted_by_an_es256_verifier(ec_keys: KeyPair) -> None:
    verifier = TokenVerifier(AuthSettings(algorithm="ES256", public_key=ec_keys.public_pem))

    assert verifier.verify(mint_token(ec_keys.private_pem, "dave", algorithm="ES256")).user == (
        "dave"
    )


def test_minted_token_expires_ttl_seconds_after_now() -> None:
    now = time.time()

    found = hs256().verify(mint_token(SECRET, "alice", ttl_seconds=120, now=now))

    assert found.expires_at == int(now + 120)


# -- presence claims and revocations ----------------------------------------------------------


def test_info_and_admin_claims_reach_the_principal() -> None:
    found = hs256().verify(mint_token(SECRET, "alice", admin=True, info={"name": "Alice"}))

    assert found.admin
    assert found.info == {"name": "Alice"}


@pytest.mark.parametrize(
    "claims_",
    [{"info": "Alice"}, {"info": ["a"]}, {"info": {"bio": "x" * 1100}}, {"admin": "yes"}],
)
def test_malformed_info_or_admin_claim_is_auth_failed(claims_: dict[str, Any]) -> None:
    assert refusal(hs256(), sign(claims(**claims_))) is ErrorCode.AUTH_FAILED


def test_token_living_longer_than_the_configured_lifetime_is_refused() -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET, max_token_lifetime_seconds=3600))

    assert refusal(verifier, mint_token(SECRET, "alice", ttl_seconds=7200)) is (
        ErrorCode.AUTH_FAILED
    )
    assert verifier.verify(mint_token(SECRET, "alice", ttl_seconds=600)).user == "alice"


def test_revocation_covers_tokens_issued_before_it_and_lapses() -> None:
    revocations = Revocations()
    old = Principal("alice", (), (), 0.0, issued_at=100.0)
    new = Principal("alice", (), (), 0.0, issued_at=300.0)
    undated = Principal("alice", (), (), 0.0)
    revocations.revoke("alice", 200_000, until=1_000.0)

    assert revocations.revoked(old, now=500.0)
    assert revocations.revoked(undated, now=500.0)
    assert not revocations.revoked(new, now=500.0)
    assert not revocations.revoked(old, now=1_000.0)


def test_an_earlier_revocation_never_weakens_a_later_one() -> None:
    revocations = Revocations()
    revocations.revoke("alice", 200_000, until=1_000.0)

    assert revocations.revoke("alice", 100_000, until=900.0) == 200_000
    assert revocations.revoked(Principal("alice", (), (), 0.0, issued_at=150.0), now=950.0)


def test_cut_off_in_force_is_told_until_it_lapses() -> None:
    revocations = Revocations()
    revocations.revoke("alice", 200_000, until=1_000.0)

    assert revocations.cut_off("alice", now=500.0) == 200_000
    assert revocations.cut_off("alice", now=1_000.0) is None
    assert revocations.cut_off("bob", now=500.0) is None


@pytest.mark.parametrize(
    "info",
    [
        {"n": "\ud800"},
        {"n": 2**70},
        {"n": functools.reduce(lambda inner, _: [inner], range(300), [])},
        {"n": [float("nan")]},
        {"n": {"m": float("-inf")}},
    ],
    ids=["lone-surrogate", "int-past-64-bits", "nested-300-deep", "nan", "infinity"],
)
def test_an_info_claim_clients_cannot_be_sent_is_auth_failed(info: object) -> None:
    verifier = TokenVerifier(AuthSettings(secret=SECRET))
    token = jwt.encode({"sub": "alice", "exp": time.time() + 60, "info": info}, SECRET)
    with pytest.raises(ProtocolError) as caught:
        verifier.verify(token)
    assert caught.value.code is ErrorCode.AUTH_FAILED


@pytest.mark.parametrize(
    "claims_",
    [{"sub": "bob\ud800"}, {"channels": ["agent:\udfff"]}, {"publish": ["\ud800*"]}],
    ids=["sub", "channels", "publish"],
)
def test_a_lone_surrogate_in_a_text_claim_is_auth_failed(claims_: dict[str, Any]) -> None:
    token = jwt.encode({"sub": "alice", "exp": time.time() + 60, **claims_}, SECRET)

    assert refusal(hs256(), token) is ErrorCode.AUTH_FAILED


def test_a_token_issued_in_the_second_of_a_revocation_stays_valid() -> None:
    now = 1_800_000_000.7
    principal = Principal(
        user="alice", subscribe=(), publish=(), expires_at=now + 60, issued_at=math.floor(now)
    )
    assert not issued_before(principal, int(now * 1000))
    assert issued_before(principal, int((now + 1) * 1000))
