"""Channel grammar and the channel → NATS subject / stream mapping."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from neurelay.errors import ProtocolError
from neurelay.protocol.channels import (
    MAX_CHANNEL_LENGTH,
    SYSTEM,
    Channel,
    is_valid_namespace,
    is_valid_prefix,
    live_subject,
    parse_channel,
    stored_subject,
    stream_name,
    stream_subjects,
)
from neurelay.protocol.codes import ErrorCode

NAMESPACES = st.from_regex(r"[a-z][a-z0-9-]{0,31}", fullmatch=True).filter(lambda s: s != SYSTEM)
IDS = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)
PREFIXES = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
VALID_CHANNELS = st.one_of(
    st.just(SYSTEM), st.builds(lambda ns, ident: f"{ns}:{ident}", NAMESPACES, IDS)
)
SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def _outcome(raw: object) -> Channel | ProtocolError:
    try:
        return parse_channel(raw)
    except ProtocolError as e:
        return e


def _refusal(raw: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_channel(raw)
    return info.value


# -- accepted ---------------------------------------------------------------------------------


def test_system_parses_to_the_system_namespace_without_id() -> None:
    channel = parse_channel("system")

    assert channel == Channel(SYSTEM, None)
    assert channel.name == "system"
    assert str(channel) == "system"


@pytest.mark.parametrize(
    ("raw", "namespace", "ident"),
    [
        ("agent:42", "agent", "42"),
        ("conversation:Ab_c-9", "conversation", "Ab_c-9"),
        ("a:b", "a", "b"),
        ("a1-:x", "a1-", "x"),
        ("metrics:-", "metrics", "-"),
        ("n" + "s" * 31 + ":id", "n" + "s" * 31, "id"),
        ("agent:" + "Z" * 128, "agent", "Z" * 128),
    ],
)
def test_namespace_and_id_within_the_grammar_are_accepted(
    raw: str, namespace: str, ident: str
) -> None:
    channel = parse_channel(raw)

    assert (channel.namespace, channel.id) == (namespace, ident)
    assert channel.name == raw
    assert str(channel) == raw


def test_longest_possible_channel_is_accepted() -> None:
    raw = "n" * 32 + ":" + "i" * 128

    assert len(raw) == MAX_CHANNEL_LENGTH
    assert parse_channel(raw).name == raw


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("agent:*", id="star-wildcard"),
        pytest.param("agent:>", id="tail-wildcard"),
        pytest.param("*", id="bare-star"),
        pytest.param(">", id="bare-gt"),
        pytest.param("agent:a.b", id="dot-in-id"),
        pytest.param("agent.x:1", id="dot-in-namespace"),
        pytest.param("a*:1", id="star-in-namespace"),
        pytest.param("agent:a b", id="space-in-id"),
        pytest.param("agent:a\tb", id="tab-in-id"),
        pytest.param("agent:1\n", id="trailing-newline"),
        pytest.param(" agent:1", id="leading-space"),
        pytest.param("agent :1", id="space-in-namespace"),
        pytest.param("agent:", id="empty-id"),
        pytest.param(":1", id="empty-namespace"),
        pytest.param(":", id="colon-only"),
        pytest.param("", id="empty"),
        pytest.param("agent", id="no-separator"),
        pytest.param("Agent:1", id="uppercase-namespace"),
        pytest.param("AGENT:1", id="all-uppercase-namespace"),
        pytest.param("1agent:1", id="namespace-starts-with-digit"),
        pytest.param("-agent:1", id="namespace-starts-with-dash"),
        pytest.param("a_b:1", id="underscore-in-namespace"),
        pytest.param("system:x", id="system-with-id"),
        pytest.param("System", id="system-capitalised"),
        pytest.param("system:", id="system-colon"),
        pytest.param("agent:1:2", id="second-colon"),
        pytest.param("agent:é", id="non-ascii-id"),
        pytest.param("agent:\u0661", id="non-ascii-digit"),
        pytest.param("ágent:1", id="non-ascii-namespace"),
        pytest.param("n" * 33 + ":1", id="namespace-33-chars"),
        pytest.param("agent:" + "i" * 129, id="id-129-chars"),
        pytest.param("agent:\x00", id="nul"),
    ],
)
def test_channel_outside_the_grammar_is_refused_as_invalid_channel(raw: str) -> None:
    assert _refusal(raw).code is ErrorCode.INVALID_CHANNEL


@pytest.mark.parametrize("raw", ["agent:*", "agent:>", "agent:a.b", "agent:a b"])
def test_wildcard_channel_is_refused_before_reaching_nats(raw: str) -> None:
    error = _refusal(raw)

    assert error.code is ErrorCode.INVALID_CHANNEL
    assert error.channel == raw


def test_overlong_channel_is_refused_without_echoing_it() -> None:
    raw = "agent:" + "x" * 10_000

    error = _refusal(raw)

    assert error.code is ErrorCode.INVALID_CHANNEL
    assert error.channel is None


def test_channel_one_past_the_maximum_length_is_refused() -> None:
    raw = "n" * 32 + ":" + "i" * 129

    assert len(raw) == MAX_CHANNEL_LENGTH + 1
    assert _refusal(raw).code is ErrorCode.INVALID_CHANNEL


@pytest.mark.parametrize("raw", [None, 42, 4.2, True, b"agent:1", ["agent:1"], {"agent": "1"}])
def test_non_string_channel_is_refused_as_invalid_channel(raw: object) -> None:
    assert _refusal(raw).code is ErrorCode.INVALID_CHANNEL


# -- namespaces and prefixes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "valid"),
    [
        ("agent", True),
        ("a", True),
        ("a-1", True),
        ("a" * 32, True),
        ("a" * 33, False),
        ("", False),
        ("Agent", False),
        ("1a", False),
        ("a.b", False),
        ("a_b", False),
        ("a\n", False),
    ],
)
def test_namespace_validity_follows_the_grammar(namespace: str, valid: bool) -> None:
    assert is_valid_namespace(namespace) is valid


@pytest.mark.parametrize(
    ("prefix", "valid"),
    [
        ("neurelay", True),
        ("t1_ab-C", True),
        ("p" * 64, True),
        ("p" * 65, False),
        ("", False),
        ("a.b", False),
        ("a*", False),
        ("a>", False),
        ("a b", False),
        ("a\n", False),
    ],
)
def test_prefix_validity_allows_a_single_subject_token(prefix: str, valid: bool) -> None:
    assert is_valid_prefix(prefix) is valid


# -- subjects and streams ---------------------------------------------------------------------


def test_channel_maps_to_stored_and_live_subjects_under_the_prefix() -> None:
    channel = parse_channel("agent:42")

    assert stored_subject("nr", channel) == "nr.s.agent.42"
    assert live_subject("nr", channel) == "nr.l.agent.42"


def test_system_maps_to_subjects_without_an_id_token() -> None:
    channel = parse_channel("system")

    assert stored_subject("nr", channel) == "nr.s.system"
    assert live_subject("nr", channel) == "nr.l.system"


def test_stream_is_named_after_prefix_and_namespace() -> None:
    assert stream_name("nr", "agent") == "nr_agent"


def test_namespace_stream_stores_one_token_per_id_and_republishes_it_to_the_live_tree() -> None:
    assert stream_subjects("nr", "agent") == ("nr.s.agent.*", "nr.l.agent.{{wildcard(1)}}")


def test_system_stream_stores_only_the_system_subject() -> None:
    assert stream_subjects("nr", "system") == ("nr.s.system", "nr.l.system")


def test_stored_subject_of_a_channel_matches_its_namespace_stream_filter() -> None:
    channel = parse_channel("agent:7")
    stored_filter, _ = stream_subjects("nr", "agent")

    assert stored_filter.removesuffix("*") + "7" == stored_subject("nr", channel)


# -- properties -------------------------------------------------------------------------------


@given(raw=VALID_CHANNELS, prefix=PREFIXES)
def test_every_accepted_channel_maps_to_literal_subject_tokens(raw: str, prefix: str) -> None:
    channel = parse_channel(raw)

    for subject in (stored_subject(prefix, channel), live_subject(prefix, channel)):
        tokens = subject.split(".")
        assert all(SUBJECT_TOKEN.fullmatch(token) for token in tokens), subject
        assert tokens[0] == prefix
        assert len(tokens) == (3 if channel.id is None else 4)


@given(raw=VALID_CHANNELS)
def test_every_accepted_channel_round_trips_through_its_name(raw: str) -> None:
    channel = parse_channel(raw)

    assert channel.name == raw
    assert parse_channel(channel.name) == channel


@given(raw=VALID_CHANNELS, prefix=PREFIXES)
def test_stored_and_live_subjects_never_coincide(raw: str, prefix: str) -> None:
    channel = parse_channel(raw)

    assert stored_subject(prefix, channel) != live_subject(prefix, channel)


@given(raw=st.text(max_size=200))
def test_arbitrary_text_parses_or_raises_invalid_channel_only(raw: str) -> None:
    result = _outcome(raw)

    if isinstance(result, ProtocolError):
        assert result.code is ErrorCode.INVALID_CHANNEL
    else:
        assert result.name == raw
        assert not any(c in raw for c in "*>. \t\r\n")


@given(raw=st.text(alphabet="abcAB09_-:.*> \nsystem", max_size=40))
def test_near_miss_text_parses_or_raises_invalid_channel_only(raw: str) -> None:
    result = _outcome(raw)

    if isinstance(result, ProtocolError):
        assert result.code is ErrorCode.INVALID_CHANNEL
    else:
        assert result.name == raw
        assert not any(c in raw for c in "*>. \n")
