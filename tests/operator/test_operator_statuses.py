"""Typed statuses of both kinds, built without a cluster."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from neurelay.operator import conditions as cond
from neurelay.operator.context import status_patch
from neurelay.operator.models import ChannelStatus, RealtimeGatewaySpec, RealtimeGatewayStatus
from neurelay.operator.naming import GatewayRef, selector_string
from neurelay.operator.statuses import (
    channel_status,
    conditions_of,
    gateway_applied,
    gateway_failure,
    gateway_status,
)

REF = GatewayRef("prod", "edge", "uid-1")
SPEC = RealtimeGatewaySpec.model_validate(
    {"nats": {"url": "nats://nats:4222"}, "auth": {"secretRef": {"name": "jwt", "key": "s"}}}
)


def deployment(ready: int, *, replicas: int = 2, updated: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": updated,
        },
    }


def by_type(status: RealtimeGatewayStatus | ChannelStatus) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions_of(status)}


def test_gateway_is_ready_only_when_all_replicas_are_ready() -> None:
    status = gateway_status(SPEC, REF, deployment(ready=1), ["agent"], [])
    assert isinstance(status, RealtimeGatewayStatus)
    assert by_type(status)["Ready"]["status"] == "False"
    assert by_type(status)["Ready"]["reason"] == "ReplicasNotReady"
    assert by_type(status)["Progressing"]["status"] == "False"
    status = gateway_status(SPEC, REF, deployment(ready=2), ["agent"], conditions_of(status))
    assert by_type(status)["Ready"]["status"] == "True"
    assert status.endpoint == "ws://edge.prod.svc:80/ws"
    assert status.selector == selector_string(REF)


def test_gateway_status_is_written_in_the_api_spelling() -> None:
    status = gateway_status(SPEC, REF, deployment(ready=2), ["b", "a"], [], observed_generation=3)
    patch = status_patch(status)
    assert patch["readyReplicas"] == 2
    assert patch["observedGeneration"] == 3
    assert patch["channels"] == ["a", "b"]
    assert [c["type"] for c in patch["conditions"]] == ["Ready", "Progressing"]
    assert "lastTransitionTime" in patch["conditions"][0]


def test_gateway_status_reports_the_replicas_in_effect_even_while_autoscaling() -> None:
    assert (
        status_patch(gateway_status(SPEC, REF, deployment(ready=2), [], []))["desiredReplicas"] == 2
    )
    scaled = SPEC.model_copy(
        update={"autoscaling": SPEC.autoscaling.model_copy(update={"enabled": True})}
    )
    assert (
        gateway_status(scaled, REF, deployment(ready=2, replicas=7), [], []).desired_replicas == 7
    )
    assert (
        gateway_status(scaled, REF, None, [], []).desired_replicas
        == scaled.autoscaling.min_replicas
    )


def test_a_rollout_in_progress_is_progressing() -> None:
    status = gateway_status(SPEC, REF, deployment(ready=2, updated=1), [], [])
    assert by_type(status)["Progressing"]["reason"] == "RollingOut"


def test_scaled_to_zero_is_not_ready_with_its_own_reason() -> None:
    spec = SPEC.model_copy(update={"replicas": 0})
    status = gateway_status(spec, REF, deployment(ready=0, replicas=0, updated=0), [], [])
    assert by_type(status)["Ready"]["reason"] == "ScaledToZero"


def test_a_degraded_gateway_is_not_ready_for_the_same_reason_whatever_its_replicas() -> None:
    failed = gateway_failure([], "SecretNotFound", "secret jwt missing")
    assert status_patch(failed).keys() == {"conditions"}  # the rest of the status stays
    status = gateway_status(SPEC, REF, deployment(ready=2), [], conditions_of(failed))
    assert by_type(status)["Ready"]["reason"] == "SecretNotFound"
    assert by_type(status)["Ready"]["status"] == "False"


def test_applying_the_children_clears_degraded_and_readiness_follows_the_replicas() -> None:
    failed = conditions_of(gateway_failure([], "ApiError", "boom"))
    status = gateway_status(SPEC, REF, deployment(ready=2), [], gateway_applied(failed, 4))
    assert by_type(status)["Degraded"]["status"] == "False"
    assert by_type(status)["Degraded"]["observedGeneration"] == 4
    assert by_type(status)["Ready"]["status"] == "True"


def test_channel_status_sets_only_the_given_fields() -> None:
    status = channel_status([], 5, True, "StreamReady", "ok", stream="p_agent", messages=3)
    assert status_patch(status) == {
        "observedGeneration": 5,
        "stream": "p_agent",
        "messages": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "StreamReady",
                "message": "ok",
                "lastTransitionTime": status.conditions[0].last_transition_time,
                "observedGeneration": 5,
            }
        ],
    }


def test_recomputing_the_same_channel_status_changes_nothing() -> None:
    first = channel_status([], 1, True, "StreamReady", "ok", stream="s")
    again = channel_status(conditions_of(first), 1, True, "StreamReady", "ok", stream="s")
    assert not cond.status_changed(status_patch(first), status_patch(again))


def test_a_status_outside_the_crd_schema_is_refused_before_it_is_written() -> None:
    with pytest.raises(ValidationError):
        channel_status([], 1, False, "R" * 65, "reason longer than the CRD allows")


def test_the_recorded_nats_leaves_unset_credentials_out_of_the_patch() -> None:
    from neurelay.operator.models import NatsConnection

    status = channel_status([], 1, True, "StreamReady", "ok", nats=NatsConnection(url="nats://n"))
    assert status_patch(status)["nats"] == {"url": "nats://n"}  # no null that would churn
