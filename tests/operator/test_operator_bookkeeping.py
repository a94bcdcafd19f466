"""The operator's bookkeeping without a cluster: the directory, the coalescer, the sweep's
choice of stale Channels and the child watch's notion of drift."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from typing import Any

from nats.js.api import StreamInfo, StreamState

from neurelay.config import NamespaceSettings
from neurelay.errors import NeurelayError
from neurelay.jetstream.streams import desired_stream
from neurelay.operator.coalescing import Coalescer
from neurelay.operator.directory import Directory, index_channel, index_gateway
from neurelay.operator.kube import FIELD_MANAGER
from neurelay.operator.sweeping import stale_channels, unaware_channels
from neurelay.operator.watching import ChildWatch, last_writer

PREFIX = "prod_edge"
OURS = FIELD_MANAGER


def channel_body(
    name: str,
    channel_ns: str,
    *,
    created: str = "2026-01-01T00:00:00Z",
    gateway: str = "edge",
    messages: int = 10,
    status: dict[str, Any] | None = None,
    **meta: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "prod",
            "name": name,
            "creationTimestamp": created,
            "generation": 1,
            **meta,
        },
        "spec": {"gateway": gateway, "namespace": channel_ns, "history": {"messages": messages}},
        "status": status
        if status is not None
        else {
            "observedGeneration": 1,
            "stream": f"{PREFIX}_{channel_ns}",
            "messages": 0,
            "bytes": 0,
            "conditions": [{"type": "Ready", "status": "True", "reason": "StreamReady"}],
        },
    }


def directory_of(*bodies: dict[str, Any], gateways: tuple[dict[str, Any], ...] = ()) -> Directory:
    """A Directory over indexes built as kopf builds them from these objects."""
    channels: defaultdict[Any, list[Any]] = defaultdict(list)
    for body in bodies:
        for key, value in index_channel(body).items():
            channels[key].append(value)
    secrets: defaultdict[Any, list[Any]] = defaultdict(list)
    for body in gateways:
        for secret_key, gateway_name in index_gateway(body).items():
            secrets[secret_key].append(gateway_name)
    directory = Directory()
    directory.bind(channels, secrets)
    return directory


def test_the_oldest_claimant_governs_and_deleting_ones_count_only_when_asked() -> None:
    directory = directory_of(
        channel_body("young", "agent", created="2026-01-02T00:00:00Z"),
        channel_body(
            "old", "agent", created="2026-01-01T00:00:00Z", deletionTimestamp="2026-01-03T00:00:00Z"
        ),
        channel_body("other", "user"),
        channel_body("elsewhere", "agent", gateway="west"),
    )
    assert directory.owner("prod", "edge", "agent", include_deleting=True) == "old"
    assert directory.owner("prod", "edge", "agent", include_deleting=False) == "young"
    assert directory.owner("prod", "edge", "system", include_deleting=True) is None
    assert [spec.namespace for spec in directory.served("prod", "edge")] == ["agent", "user"]
    assert [spec.gateway for spec in directory.served("prod", "west")] == ["west"]


def test_gateways_are_found_by_the_secrets_they_mount() -> None:
    gateway = {
        "metadata": {"namespace": "prod", "name": "edge"},
        "spec": {
            "nats": {"url": "nats://n:4222", "credentialsSecret": {"name": "nc", "key": "creds"}},
            "auth": {"secretRef": {"name": "jwt", "key": "secret"}},
        },
    }
    directory = directory_of(gateways=(gateway,))
    assert directory.gateways_mounting("prod", "jwt") == {"edge"}
    assert directory.gateways_mounting("prod", "nc") == {"edge"}
    assert directory.gateways_mounting("prod", "other") == set()
    assert directory.gateways_mounting("staging", "jwt") == set()


def server_streams(*bodies: dict[str, Any], messages: int = 0) -> dict[str, StreamInfo]:
    streams = {}
    for body in bodies:
        channel_ns = body["spec"]["namespace"]
        config = desired_stream(
            PREFIX,
            channel_ns,
            NamespaceSettings(history_messages=body["spec"]["history"]["messages"]),
        )
        state = StreamState(messages=messages, bytes=0, first_seq=0, last_seq=0, consumer_count=0)
        streams[config.name or ""] = StreamInfo(config=config, state=state)
    return streams


def test_a_sweep_of_matching_channels_reconciles_none() -> None:
    bodies = [channel_body(f"c{i}", f"ns{i}") for i in range(50)]
    entries = directory_of(*bodies).channels("prod", "edge")
    assert stale_channels(entries, PREFIX, server_streams(*bodies)) == []


def test_a_sweep_finds_missing_drifted_and_miscounted_streams_and_unready_channels() -> None:
    fine, missing, drifted, counted, broken = (
        channel_body("fine", "a"),
        channel_body("missing", "b"),
        channel_body("drifted", "c"),
        channel_body("counted", "d"),
        channel_body("broken", "e"),
    )
    broken["status"]["conditions"][0] |= {"status": "False", "reason": "NatsUnavailable"}
    streams = server_streams(fine, drifted, broken)
    streams |= server_streams(counted, messages=3)
    name = f"{PREFIX}_c"
    streams[name] = dataclasses.replace(
        streams[name], config=dataclasses.replace(streams[name].config, max_msgs_per_subject=7)
    )
    entries = directory_of(fine, missing, drifted, counted, broken).channels("prod", "edge")
    assert sorted(stale_channels(entries, PREFIX, streams)) == [
        "broken",
        "counted",
        "drifted",
        "missing",
    ]


def test_a_sweep_sees_new_generations_and_conflicts_but_skips_paused_and_deleting() -> None:
    changed = channel_body("changed", "a")
    changed["metadata"]["generation"] = 2
    winner = channel_body("winner", "b", created="2026-01-01T00:00:00Z")
    loser = channel_body("loser", "b", created="2026-01-02T00:00:00Z")  # not yet told
    told = channel_body("told", "b", created="2026-01-03T00:00:00Z")
    told["status"]["conditions"][0] |= {"status": "False", "reason": "Conflict"}
    paused = channel_body("paused", "c", annotations={"realtime.neurectomy.io/paused": "true"})
    going = channel_body("going", "d", deletionTimestamp="2026-01-03T00:00:00Z")
    bodies = [changed, winner, loser, told, paused, going]
    streams = server_streams(winner)
    entries = directory_of(*bodies).channels("prod", "edge")
    assert sorted(stale_channels(entries, PREFIX, streams)) == ["changed", "loser"]


def test_a_sweep_reports_a_leftover_stream_of_a_channel_without_history_only_on_delete() -> None:
    kept = channel_body("kept", "a", messages=0)
    gone = channel_body("gone", "b", messages=0)
    gone["spec"]["deletionPolicy"] = "Delete"
    for body in (kept, gone):
        body["status"] = {
            "observedGeneration": 1,
            "stream": "",
            "conditions": [{"type": "Ready", "status": "True", "reason": "NoHistory"}],
        }
    streams = server_streams(channel_body("x", "a"), channel_body("y", "b"))
    entries = directory_of(kept, gone).channels("prod", "edge")
    assert stale_channels(entries, PREFIX, streams) == ["gone"]


def test_without_nats_only_the_channels_still_saying_ready_are_reconciled() -> None:
    told = channel_body("told", "a")
    told["status"]["conditions"][0] |= {"status": "False", "reason": "NatsUnavailable"}
    paused = channel_body("paused", "c", annotations={"realtime.neurectomy.io/paused": "true"})
    entries = directory_of(channel_body("ready", "b"), told, paused).channels("prod", "edge")
    assert unaware_channels(entries) == ["ready"]


async def test_a_burst_of_requests_costs_two_reconciles() -> None:
    calls: list[tuple[str, str]] = []
    started, release, third = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def reconcile(namespace: str, name: str) -> None:
        calls.append((namespace, name))
        started.set()
        if len(calls) == 3:
            third.set()
        await release.wait()

    coalescer = Coalescer(reconcile, _log(), lambda retry: 0.01)
    coalescer.request("prod", "edge")
    await started.wait()  # the first reconcile runs; 1,000 more asks arrive meanwhile
    for _ in range(1000):
        coalescer.request("prod", "edge")
    coalescer.request("prod", "west")
    release.set()
    await asyncio.wait_for(third.wait(), 5)
    await asyncio.sleep(0.1)  # room for a wrong fourth reconcile
    assert sorted(calls) == [("prod", "edge"), ("prod", "edge"), ("prod", "west")]
    assert coalescer.pending() == 0


async def test_a_failed_reconcile_is_retried_with_backoff_and_at_once_on_news() -> None:
    outcomes = [NeurelayError("secret missing"), NeurelayError("secret missing"), None]
    delays: list[int] = []
    waiting, done = asyncio.Event(), asyncio.Event()

    async def reconcile(namespace: str, name: str) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        done.set()

    def backoff(retry: int) -> float:
        delays.append(retry)
        if retry:
            waiting.set()
            return 3600.0  # the second retry waits for news
        return 0.01

    coalescer = Coalescer(reconcile, _log(), backoff)
    coalescer.request("prod", "edge")
    await asyncio.wait_for(waiting.wait(), 5)
    coalescer.request("prod", "edge")  # e.g. the Secret appeared
    await asyncio.wait_for(done.wait(), 5)
    assert delays == [0, 1]
    await coalescer.close()


def _log() -> Any:
    import logging

    return logging.getLogger("test.coalescer")


def child(
    kind: str, *, generation: int | None, version: str, writer: str, subresource: str = ""
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "namespace": "prod",
        "name": "edge",
        "resourceVersion": version,
        "managedFields": [
            {"manager": FIELD_MANAGER, "operation": "Apply", "time": "2026-01-01T00:00:00Z"},
            {
                "manager": writer,
                "operation": "Update",
                "time": "2026-01-01T00:00:05Z",
                **({"subresource": subresource} if subresource else {}),
            },
        ],
    }
    if generation is not None:
        meta["generation"] = generation
    return {"kind": kind, "metadata": meta}


def test_deletion_is_drift_and_is_reported_once_re_created() -> None:
    watch = ChildWatch()
    body = child("ConfigMap", generation=None, version="1", writer=OURS)
    assert not watch.observe(None, body)
    assert watch.observe("DELETED", body)
    assert watch.missing("prod", {"edge"}) == ["ConfigMap edge"]
    assert watch.applied(body) == "ConfigMap edge had been deleted; re-created"
    assert watch.applied(body) is None
    assert watch.missing("prod", {"edge"}) == []


def test_a_spec_change_by_another_client_is_drift_but_status_and_own_writes_are_not() -> None:
    watch = ChildWatch()
    assert not watch.observe(None, child("Service", generation=None, version="1", writer=OURS))
    edited = child("Service", generation=None, version="2", writer="kubectl-edit")
    assert watch.observe("MODIFIED", edited)
    restored = child("Service", generation=None, version="3", writer="kubectl-edit")
    assert watch.applied(restored) == "Service edge had been changed by kubectl-edit; restored"
    assert not watch.observe("MODIFIED", restored)  # the operator's own write
    deployment = child("Deployment", generation=4, version="10", writer=OURS)
    assert not watch.observe(None, deployment)
    status = child(
        "Deployment",
        generation=4,
        version="11",
        writer="kube-controller-manager",
        subresource="status",
    )
    assert not watch.observe("MODIFIED", status)


def test_a_child_refusing_the_apply_after_a_foreign_change_is_replaced_once() -> None:
    watch = ChildWatch()
    first = child("Service", generation=None, version="1", writer=OURS)
    assert not watch.observe(None, first)
    assert not watch.replace(first)  # no foreign change seen: the refusal is not ours to fix
    edited = child("Service", generation=None, version="2", writer="kubectl-patch")
    assert watch.observe("MODIFIED", edited)
    assert watch.replace(edited)
    assert not watch.observe("DELETED", edited)  # the operator's own deletion
    fresh = child("Service", generation=None, version="5", writer="x")
    message = watch.applied(fresh) or ""
    assert "changed by kubectl-patch" in message
    assert message.endswith("; replaced")
    assert watch.applied(fresh) is None  # reported once


def test_a_child_first_seen_after_another_clients_change_is_drift() -> None:
    watch = ChildWatch()
    assert not watch.observe(None, child("ConfigMap", generation=None, version="1", writer=OURS))
    edited = child("Service", generation=None, version="2", writer="kubectl-patch")
    assert watch.observe("MODIFIED", edited)  # its first event, already changed by hand
    restored = child("Service", generation=None, version="3", writer="kubectl-patch")
    assert watch.applied(restored) == "Service edge had been changed by kubectl-patch; restored"


def test_an_edit_in_the_second_of_the_operators_apply_is_checked_and_reported_if_restored() -> None:
    watch = ChildWatch()
    tied = child("Service", generation=None, version="2", writer="kubectl-patch")
    tied["metadata"]["managedFields"][1]["time"] = tied["metadata"]["managedFields"][0]["time"]
    assert watch.observe(None, tied)  # first sight, edited within the second of the create
    restored = child("Service", generation=None, version="3", writer="kubectl-patch")
    assert watch.applied(restored) == "Service edge had been changed by kubectl-patch; restored"
    unchanged = child("ConfigMap", generation=None, version="7", writer="x")
    unchanged["metadata"]["managedFields"][1]["time"] = "2026-01-01T00:00:00Z"
    assert watch.observe(None, unchanged)
    assert watch.applied(unchanged) is None  # the check's apply changed nothing: not drift


def test_an_autoscalers_scaling_asks_for_a_check_but_is_not_reported_as_drift() -> None:
    watch = ChildWatch()
    assert not watch.observe(None, child("Deployment", generation=1, version="1", writer=OURS))
    scaled = child(
        "Deployment",
        generation=2,
        version="2",
        writer="kube-controller-manager",
        subresource="scale",
    )
    assert last_writer(scaled) == "kube-controller-manager"
    assert watch.observe("MODIFIED", scaled)
    assert watch.applied(scaled) is None  # the apply left the autoscaler's replicas alone


def test_the_last_writer_is_the_latest_manager_other_than_the_operator() -> None:
    body = child("Service", generation=None, version="1", writer="kubectl")
    assert last_writer(body) == "kubectl"
    body["metadata"]["managedFields"][0]["time"] = "2026-01-02T00:00:00Z"  # the operator's
    assert last_writer(body) == "kubectl"
    body["metadata"]["managedFields"].pop()
    assert last_writer(body) == ""


def test_an_apply_that_took_fields_back_names_the_client_though_the_watch_never_showed_it() -> None:
    watch = ChildWatch()
    assert not watch.observe(None, child("ConfigMap", generation=None, version="1", writer=OURS))
    restored = child("ConfigMap", generation=None, version="3", writer=OURS)
    message = watch.applied(restored, "kubectl-patch")
    assert message == "ConfigMap edge had been changed by kubectl-patch; restored"


def test_a_change_the_watch_shows_after_its_restore_is_not_reported_twice() -> None:
    watch = ChildWatch()
    assert not watch.observe(None, child("ConfigMap", generation=None, version="1", writer=OURS))
    restored = child("ConfigMap", generation=None, version="3", writer=OURS)
    assert watch.applied(restored, "kubectl-patch")
    late = child("ConfigMap", generation=None, version="2", writer="kubectl-patch")
    assert watch.observe("MODIFIED", late)  # the edit itself, shown after the restore
    assert watch.applied(restored) is None  # the check's apply found it already restored
