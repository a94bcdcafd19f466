"""The Neurelay Kubernetes operator: RealtimeGateway and Channel custom resources.

Pure modules are nouns: `models` (the CRDs' schemas), `naming`, `render` and
`workloads` (specs -> child manifests), `election` (which Channel governs a
namespace), `outcomes` (what a stream sync means), `statuses` and
`conditions` (typed status), `crdgen` and `chartgen` (generated files). The
modules that act on the world reconcile one kind each, `gateways` and
`channels`, on a shared `context`; `kube` is the thin Kubernetes API client,
`handlers` the thin kopf wiring on top, `running` the process. Streams are
managed through `neurelay.jetstream`, the adapter the gateway uses too.
"""

GROUP = "realtime.neurectomy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
