"""The Neurelay Kubernetes operator: RealtimeGateway and Channel custom resources.

Modules that hold data are nouns (`models`, `settings`, `metrics`), pure
functions that compute are nouns too (`render`, `conditions`, `crdgen`), and
modules that act on the world have gerund names (`reconciling` for whole
resources, `running` for the process). `kube` is the thin Kubernetes API
client and `handlers` the thin kopf wiring on top of `reconciling`. Streams
are managed through `neurelay.jetstream`, the adapter the gateway uses too.
"""

GROUP = "realtime.neurectomy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
