"""The operator at a thousand Channels: the section of docs/performance.md, from the scale test.

`tests/operator/test_operator_scale.py` (marked slow, run by CI) applies one
RealtimeGateway and 1,000 Channels with one `kubectl apply` against a real
API server and NATS, lets the operator idle, deletes the Channels with one
`kubectl delete`, and prints the figures below; `python -m bench docs`
puts this section into docs/performance.md. Update the figures from its
output (`pytest -s tests/operator/test_operator_scale.py`).
"""

from __future__ import annotations

RUNS = ("2026-11-30T12:17Z", "2026-11-30T12:35Z", "2026-11-30T13:10Z")

FIGURES = (
    ("`kubectl apply` of 1 gateway + 1,000 Channels returned", "60.3 s", "37.7 s", "24.6 s"),
    ("every Channel Ready, from the start of the apply", "76.7 s", "55.0 s", "28.9 s"),
    ("operator CPU from the apply to all Ready", "17.2 s", "16.1 s", "15.1 s"),
    ("`kubectl delete rtch --all` returned", "53.9 s", "41.1 s", "26.9 s"),
    (
        "every Channel and its stream gone, from the start of the delete",
        "56.3 s",
        "47.3 s",
        "28.2 s",
    ),
    ("operator CPU from the delete to all gone", "9.9 s", "10.0 s", "12.3 s"),
    ("idle operator CPU over two drift intervals (60 s)", "0.42 %", "0.58 %", "0.45 %"),
    ("operator RSS with 1,000 Channels", "165 MiB", "170 MiB", "157 MiB"),
    ("INFO log lines while idle", "0", "0", "0"),
)

NOTES = """
The operator ran with its defaults (30 s drift interval, INFO logs) on the
two-core machine below. In the first two runs other work shared it (load
average 7 to 20), which is why `kubectl` itself took 40 to 60 s for each of
the 1,000-object commands; the third ran on a quieter machine (load average
1 to 3), where every Channel was Ready 28.9 s after the start of
`kubectl apply` and gone with its stream 28.2 s after the start of
`kubectl delete`. The operator's CPU seconds are the steadier measure: about 16 ms a
Channel to become Ready and 10 ms to go. Every Channel was Ready 16 to 17 s
after `kubectl apply` returned, and gone with its stream 2 to 6 s after
`kubectl delete` returned. Before the changes of this section, 1,000
Channels became Ready 66 to 120 s after an apply of 7 s, the idle operator
used 68 to 85 % of a core and ~370 MiB, and 90 s after a delete every
Channel and most streams were still there. What changed
(neurelay/operator/):

- `directory`: the election of a channel namespace's Channel and the
  gateway's served Channels are answered from kopf's in-memory indexes; each
  Channel's reconcile used to list every Channel of the namespace (O(N²) for
  a burst or a drift pass).
- `sweeping`: the drift check is one JetStream `STREAM.LIST` per gateway and
  interval, compared purely with every Channel; only Channels that differ are
  reconciled. It used to be a kopf timer per Channel, each reconciling.
- `coalescing`: gateway reconciles asked for by Channel, child and Secret
  events collapse (0.5 s settle), so a burst rewrites the ConfigMap a few
  times, not once per Channel; the ConfigMap is rendered by libyaml.
- `kube`: at most 16 connections to the API server (kubernetes_asyncio opens
  up to 100, each with a TLS handshake and ~300 kB of buffers), which took
  the RSS from ~270 to ~165 MiB; kopf's index callbacks are coroutines, not
  functions run in threads.

What is left: kopf's own per-event processing (patching its annotations,
diffing, the index) is about half of the operator's CPU during a burst, and
kubernetes_asyncio reads the proxy environment and `.netrc` in a thread for
every request.
"""


def section() -> str:
    rows = "\n".join(f"| {what} | {' | '.join(values)} |" for what, *values in FIGURES)
    return (
        "\n## The operator at a thousand Channels\n\n"
        f"_Runs {', '.join(RUNS)}, not part of `python -m bench all`: "
        "`tests/operator/test_operator_scale.py` needs the Kubernetes control plane "
        "(`e2e/control-plane/build.sh`); its figures are recorded in "
        "`bench/operator_scale.py`._ CPU as a share of one core.\n\n"
        f"| | {' | '.join(RUNS)} |\n|---|{'---:|' * len(RUNS)}\n"
        f"{rows}\n{NOTES}"
    )
