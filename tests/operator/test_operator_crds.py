"""The CRDs in crds/ are generated from the models, complete and current (no cluster needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic.fields import FieldInfo

from neurelay.config import AuthSettings, LimitSettings, NamespaceSettings, PresenceSettings
from neurelay.operator import crdgen, models


def _properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, child in (schema.get("properties") or {}).items():
        yield f"{path}.{name}", child
        yield from _properties(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _properties(schema["items"], f"{path}[]")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_crds_directory_matches_the_models() -> None:
    assert crdgen.stale_files() == [], "crds/ is stale: run python -m neurelay.operator.crdgen"


def test_crdgen_check_reports_a_stale_file(tmp_path: Any) -> None:
    assert crdgen.main(["--output", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--output", str(tmp_path)]) == 0
    (tmp_path / "channels.yaml").write_text("# edited by hand\n")
    assert crdgen.main(["--check", "--output", str(tmp_path)]) == 1


@pytest.mark.parametrize("crd", [crdgen.realtime_gateway_crd(), crdgen.channel_crd()])
def test_every_field_has_a_description_for_kubectl_explain(crd: dict[str, Any]) -> None:
    schema = _schema(crd)
    for section in ("spec", "status"):
        missing = [
            path
            for path, child in _properties(schema["properties"][section], section)
            if not child.get("description")
        ]
        assert missing == []


@pytest.mark.parametrize("crd", [crdgen.realtime_gateway_crd(), crdgen.channel_crd()])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    for path, child in _properties(_schema(crd)):
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & child.keys(), path
        assert child.get("additionalProperties") is not False, path
        assert "type" in child or child.get("x-kubernetes-int-or-string"), path


def test_gateway_crd_has_short_name_columns_status_and_scale() -> None:
    crd = crdgen.realtime_gateway_crd()
    assert crd["spec"]["names"]["shortNames"] == ["rtgw"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Replicas", "Available", "Ready", "Reason", "Endpoint", "Age"]
    # The count in effect (the autoscaler's while it scales), not the ignored spec.replicas.
    assert columns["Replicas"] == ".status.desiredReplicas"
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'


def test_channel_crd_has_short_name_columns_and_status() -> None:
    crd = crdgen.channel_crd()
    assert crd["spec"]["names"]["shortNames"] == ["rtch"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert {"Namespace", "History", "Stream", "Ready", "Age"} <= set(columns)
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'


def test_descriptions_state_defaults_and_bounds_for_kubectl_explain() -> None:
    spec = _schema(crdgen.realtime_gateway_crd())["properties"]["spec"]["properties"]
    limits = spec["limits"]["properties"]
    assert limits["maxMessageBytes"]["description"] == (
        "Largest client frame, in bytes, checked before parsing. "
        "Default: 1048576. Minimum: 256. Maximum: 67108864."
    )
    assert limits["messagesPerSecond"]["description"].endswith(
        "Default: 100. Greater than 0. Maximum: 1000000."
    )
    assert spec["imagePullPolicy"]["description"].endswith(
        "Default: IfNotPresent. One of: Always, IfNotPresent, Never."
    )
    assert spec["resources"]["properties"]["limits"]["description"].endswith(
        'Default: {"memory": "512Mi"}.'
    )
    secret_name = spec["nats"]["properties"]["credentialsSecret"]["properties"]["name"]
    assert secret_name["description"] == "Name of the Secret. 1 to 253 characters."
    # An object's default is its fields' defaults, described on each field instead.
    assert "Default" not in spec["limits"]["description"]


@pytest.mark.parametrize("crd", [crdgen.realtime_gateway_crd(), crdgen.channel_crd()])
def test_every_default_and_bound_is_in_its_description(crd: dict[str, Any]) -> None:
    for path, child in _properties(_schema(crd)):
        description = child.get("description", "")
        if "default" in child and "properties" not in child:
            assert "Default: " in description, path
        for bound in ("minimum", "maximum", "maxLength", "maxItems"):
            if bound in child:
                assert str(child[bound]).removesuffix(".0") in description, (path, bound)


def test_defaults_and_bounds_come_from_the_gateway_configuration() -> None:
    spec = _schema(crdgen.realtime_gateway_crd())["properties"]["spec"]
    limits = spec["properties"]["limits"]["properties"]
    assert limits["connectionsPerUser"]["default"] == 5
    assert limits["connectionsPerUser"]["minimum"] == 1
    assert limits["messagesPerSecond"]["exclusiveMinimum"] is True
    assert spec["properties"]["limits"]["default"]["connectionsPerUser"] == 5
    history = _schema(crdgen.channel_crd())["properties"]["spec"]["properties"]["history"]
    assert history["properties"]["replicas"]["enum"] == [1, 3, 5]
    assert history["properties"]["storage"]["enum"] == ["file", "memory"]


def test_cross_field_rules_are_cel_validations() -> None:
    spec = _schema(crdgen.realtime_gateway_crd())["properties"]["spec"]["properties"]
    messages = [
        rule["message"]
        for section in ("auth", "autoscaling", "limits")
        for rule in spec[section]["x-kubernetes-validations"]
    ]
    assert any("minReplicas must not exceed" in m for m in messages)
    assert any("auth.secretRef" in m for m in messages)
    channel = _schema(crdgen.channel_crd())["properties"]["spec"]
    assert channel["properties"]["gateway"]["x-kubernetes-validations"][0]["rule"] == (
        "self == oldSelf"
    )


@pytest.mark.parametrize(
    ("spec_model", "source_model", "pairs"),
    [
        (models.LimitsSpec, LimitSettings, {n: n for n in LimitSettings.model_fields}),
        (
            models.HistorySpec,
            NamespaceSettings,
            {
                "messages": "history_messages",
                "max_age_seconds": "history_max_age_seconds",
                "storage": "storage",
                "replicas": "replicas",
            },
        ),
        (
            models.AuthSpec,
            AuthSettings,
            {n: n for n in ("algorithm", "issuer", "audience", "leeway_seconds")},
        ),
        (models.PresenceSpec, PresenceSettings, {n: n for n in PresenceSettings.model_fields}),
    ],
)
def test_reused_fields_equal_the_gateway_settings(
    spec_model: type[Any], source_model: type[Any], pairs: dict[str, str]
) -> None:
    for ours, theirs in pairs.items():
        mine: FieldInfo = spec_model.model_fields[ours]
        source: FieldInfo = source_model.model_fields[theirs]
        assert mine.annotation == source.annotation, ours
        assert mine.default == source.default, ours
        assert mine.metadata == source.metadata, ours
        assert mine.description == source.description, ours


def test_reuse_falls_back_to_a_description_only_when_the_source_has_none() -> None:
    assert models.reuse(LimitSettings, "burst", description="x").description == (
        LimitSettings.model_fields["burst"].description
    )
