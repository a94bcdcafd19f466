"""GatewayConfig defaults, file loading, environment overlay and validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from neurelay.config import (
    AuthSettings,
    GatewayConfig,
    LimitSettings,
    MiB,
    NamespaceSettings,
    load_config,
)
from neurelay.errors import ConfigError

SECRET = "config-test-secret-" + "s" * 32


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(data: dict[str, Any], tmp_path: Path) -> str:
    path = write(tmp_path, "config.json", json.dumps(data))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return str(info.value)


# -- defaults ---------------------------------------------------------------------------------


def test_limit_defaults_match_the_architecture_record() -> None:
    limits = GatewayConfig().limits

    assert limits.connections_per_user == 5
    assert limits.subscriptions_per_connection == 50
    assert limits.max_message_bytes == 1024 * 1024
    assert limits.messages_per_second == 100
    assert limits.heartbeat_seconds == 30
    assert limits.auth_timeout_seconds == 10


def test_burst_defaults_to_unset_meaning_one_seconds_worth() -> None:
    assert GatewayConfig().limits.burst is None


def test_default_namespaces_are_served_with_their_history() -> None:
    namespaces = GatewayConfig().namespaces

    assert set(namespaces) == {"agent", "user", "conversation", "metrics", "system"}
    assert namespaces["conversation"].history_messages == 1000
    assert namespaces["agent"].keeps_history
    assert not namespaces["metrics"].keeps_history


def test_default_auth_is_hs256_without_issuer_or_audience() -> None:
    auth = GatewayConfig().auth

    assert (auth.algorithm, auth.issuer, auth.audience, auth.leeway_seconds) == (
        "HS256",
        None,
        None,
        0,
    )


def test_no_file_and_no_environment_gives_the_defaults() -> None:
    assert load_config(None, environ={}) == GatewayConfig()


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "empty.yaml", ""), environ={}) == GatewayConfig()


def test_config_sections_are_immutable() -> None:
    config = GatewayConfig()

    with pytest.raises(pydantic.ValidationError):
        config.limits.burst = 3  # type: ignore[misc]


def test_secret_is_not_shown_in_the_config_repr() -> None:
    config = GatewayConfig(auth=AuthSettings(secret=SECRET))

    assert SECRET not in repr(config)
    assert SECRET not in str(config)


# -- files ------------------------------------------------------------------------------------


def test_yaml_file_is_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "gateway.yaml",
        f"""
server:
  port: 9000
auth:
  secret: {SECRET}
limits:
  messages_per_second: 20
  burst: 40
namespaces:
  chat:
    history_messages: 10
    max_message_bytes: 4096
allowed_origins:
  - https://*.example.com
""",
    )

    config = load_config(path, environ={})

    assert config.server.port == 9000
    assert config.auth.secret is not None
    assert config.auth.secret.get_secret_value() == SECRET
    assert (config.limits.messages_per_second, config.limits.burst) == (20, 40)
    assert config.limits.connections_per_user == 5
    assert config.namespaces == {
        "chat": NamespaceSettings(history_messages=10, max_message_bytes=4096)
    }
    assert config.allowed_origins == ["https://*.example.com"]


def test_json_file_is_loaded(tmp_path: Path) -> None:
    data = {
        "nats": {"servers": ["nats://a:4222", "nats://b:4222"], "subject_prefix": "gw-1"},
        "limits": {"subscriptions_per_connection": 7},
        "log_level": "DEBUG",
    }
    path = write(tmp_path, "gateway.json", json.dumps(data, indent=2))

    config = load_config(path, environ={})

    assert config.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert config.nats.subject_prefix == "gw-1"
    assert config.limits.subscriptions_per_connection == 7
    assert config.log_level == "DEBUG"


def test_tab_indented_json_file_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway.json", json.dumps({"log_level": "DEBUG"}, indent="\t"))

    assert load_config(path, environ={}).log_level == "DEBUG"


@pytest.mark.parametrize("text", ['{"log_level": "DEBUG",}', "log_level: DEBUG\n"])
def test_json_file_that_is_not_json_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(write(tmp_path, "gateway.json", text), environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "limits: [unclosed\n")

    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, environ={})


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "list.yaml", text), environ={})


# -- environment overlay ----------------------------------------------------------------------


def test_environment_variable_sets_a_field() -> None:
    config = load_config(None, environ={"NEURELAY__LIMITS__MESSAGES_PER_SECOND": "7"})

    assert config.limits.messages_per_second == 7


def test_environment_overrides_the_file_and_keeps_its_other_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "limits:\n  messages_per_second: 20\n  burst: 40\n")

    config = load_config(path, environ={"NEURELAY__LIMITS__MESSAGES_PER_SECOND": "7"})

    assert (config.limits.messages_per_second, config.limits.burst) == (7, 40)


def test_environment_names_are_case_insensitive() -> None:
    config = load_config(None, environ={"NEURELAY__limits__Burst": "9"})

    assert config.limits.burst == 9


def test_environment_json_list_sets_a_list_field() -> None:
    environ = {
        "NEURELAY__NATS__SERVERS": '["nats://a:4222", "nats://b:4222"]',
        "NEURELAY__ALLOWED_ORIGINS": ' ["https://*.example.com"]',
    }

    config = load_config(None, environ=environ)

    assert config.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert config.allowed_origins == ["https://*.example.com"]


def test_environment_json_object_sets_a_section() -> None:
    environ = {"NEURELAY__NAMESPACES": '{"chat": {"history_messages": 3}}'}

    assert load_config(None, environ=environ).namespaces == {
        "chat": NamespaceSettings(history_messages=3)
    }


def test_environment_sets_a_field_of_a_namespace_given_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "namespaces:\n  chat:\n    history_messages: 3\n")

    config = load_config(path, environ={"NEURELAY__NAMESPACES__CHAT__STORAGE": "memory"})

    assert config.namespaces["chat"] == NamespaceSettings(history_messages=3, storage="memory")


def test_environment_sets_the_secret() -> None:
    config = load_config(None, environ={"NEURELAY__AUTH__SECRET": SECRET})

    assert config.auth.secret is not None
    assert config.auth.secret.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "environ",
    [
        {"PATH": "/bin", "NEURELAY_LIMITS__BURST": "x", "neurelay__limits__burst": "x"},
        {"NEURELAY__": "x", "NEURELAY____": "x"},
    ],
)
def test_unrelated_environment_variables_are_ignored(environ: dict[str, str]) -> None:
    assert load_config(None, environ=environ) == GatewayConfig()


def test_invalid_json_in_the_environment_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="NEURELAY__NATS__SERVERS"):
        load_config(None, environ={"NEURELAY__NATS__SERVERS": "[nats://a"})


def test_environment_field_inside_a_scalar_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "g.yaml", "log_level: INFO\n")

    with pytest.raises(ConfigError, match="NEURELAY__LOG_LEVEL__X"):
        load_config(path, environ={"NEURELAY__LOG_LEVEL__X": "1"})


def test_invalid_environment_value_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"limits\.messages_per_second"):
        load_config(None, environ={"NEURELAY__LIMITS__MESSAGES_PER_SECOND": "fast"})


def test_unknown_environment_field_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"limits\.messages_per_minute"):
        load_config(None, environ={"NEURELAY__LIMITS__MESSAGES_PER_MINUTE": "7"})


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limits": {"messages_per_second": 0}}, "limits.messages_per_second"),
        ({"limits": {"messages_per_second": "fast"}}, "limits.messages_per_second"),
        ({"limits": {"connections_per_user": 0}}, "limits.connections_per_user"),
        ({"limits": {"subscriptions_per_connection": 0}}, "limits.subscriptions_per_connection"),
        ({"limits": {"max_message_bytes": 255}}, "limits.max_message_bytes"),
        ({"limits": {"max_message_bytes": 64 * MiB + 1}}, "limits.max_message_bytes"),
        ({"limits": {"burst": 0}}, "limits.burst"),
        ({"limits": {"auth_timeout_seconds": 0}}, "limits.auth_timeout_seconds"),
        ({"limits": {"heartbeat_seconds": -1}}, "limits.heartbeat_seconds"),
        ({"limits": {"heartbeat_seconds": 1e-7}}, "limits.heartbeat_seconds"),
        ({"limits": {"auth_timeout_seconds": 1e-7}}, "limits.auth_timeout_seconds"),
        ({"server": {"handshake_timeout_seconds": 1e-7}}, "server.handshake_timeout_seconds"),
        ({"limits": {"connection_lease_seconds": 2}}, "limits.connection_lease_seconds"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"nats": {"servers": []}}, "nats.servers"),
        ({"nats": {"subject_prefix": "a.b"}}, "nats.subject_prefix"),
        ({"nats": {"subject_prefix": "a*"}}, "nats.subject_prefix"),
        ({"nats": {"subject_prefix": ""}}, "nats.subject_prefix"),
        ({"auth": {"algorithm": "none"}}, "auth.algorithm"),
        ({"auth": {"leeway_seconds": 301}}, "auth.leeway_seconds"),
        ({"log_level": "TRACE"}, "log_level"),
        ({"namespaces": {"chat": {"replicas": 2}}}, "namespaces.chat.replicas"),
        ({"namespaces": {"chat": {"storage": "disk"}}}, "namespaces.chat.storage"),
        ({"namespaces": {"chat": {"max_message_bytes": 10}}}, "namespaces.chat.max_message_bytes"),
        ({"namespaces": {"chat": {"history_messages": -1}}}, "namespaces.chat.history_messages"),
        ({"limits": "fast"}, "limits"),
    ],
)
def test_invalid_value_is_a_config_error_naming_the_field(
    tmp_path: Path, data: dict[str, Any], field: str
) -> None:
    assert field in config_error(data, tmp_path)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limitz": {}}, "limitz"),
        ({"limits": {"messages_per_minute": 1}}, "limits.messages_per_minute"),
        ({"namespaces": {"chat": {"ttl": 1}}}, "namespaces.chat.ttl"),
        ({"auth": {"secrets": SECRET}}, "auth.secrets"),
    ],
)
def test_unknown_field_is_refused(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    assert field in config_error(data, tmp_path)


@pytest.mark.parametrize("name", ["Agent", "a.b", "a*", "1x", "-x", "", "a_b", "x" * 33])
def test_namespace_name_outside_the_grammar_is_refused(tmp_path: Path, name: str) -> None:
    message = config_error({"namespaces": {name: {}}}, tmp_path)

    assert "namespaces" in message
    assert repr(name) in message


def test_system_namespace_is_accepted() -> None:
    config = GatewayConfig.model_validate({"namespaces": {"system": {}, "a-1": {}}})

    assert set(config.namespaces) == {"system", "a-1"}


def test_hs256_with_a_public_key_is_refused(tmp_path: Path) -> None:
    message = config_error({"auth": {"algorithm": "HS256", "public_key": "PEM"}}, tmp_path)

    assert "auth" in message
    assert "public_key" in message


def test_hs256_with_a_public_key_file_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="public_key"):
        AuthSettings(secret=SECRET, public_key_file="/etc/key.pem")


@pytest.mark.parametrize("secret", [{"secret": SECRET}, {"secret_file": "/etc/secret"}])
def test_rs256_with_a_secret_is_refused(secret: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError, match="secret"):
        AuthSettings(algorithm="RS256", **secret)


def test_rs256_with_a_public_key_is_accepted() -> None:
    assert AuthSettings(algorithm="RS256", public_key="PEM").public_key == "PEM"


def test_limit_settings_accept_their_bounds() -> None:
    limits = LimitSettings(
        connections_per_user=10_000,
        subscriptions_per_connection=1,
        max_message_bytes=256,
        messages_per_second=1_000_000,
        connection_lease_seconds=3,
    )

    assert limits.max_message_bytes == 256


def test_environment_variable_for_one_namespace_keeps_the_other_defaults() -> None:
    config = load_config(None, {"NEURELAY__NAMESPACES__AGENT__HISTORY_MESSAGES": "5"})
    assert config.namespaces["agent"].history_messages == 5
    assert set(config.namespaces) == {"agent", "user", "conversation", "metrics", "system"}
