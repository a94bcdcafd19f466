"""The one adapter between Neurelay and JetStream stream management: gateway and operator.

`errors` maps every nats-py exception to the project's `BusError` tree (one
table, so "retry later" means the same thing everywhere); `streams` says
purely what stream a channel namespace needs and how an existing stream
differs from it, field by field; `syncing` creates, corrects, reads and
deletes streams on a server; `pool` dials the short-lived connections the
operator manages streams through. Only this package imports nats-py for
stream management; the gateway's messaging (publish, follow, replay, leases)
stays in `neurelay.gateway.bus` and maps its errors through `errors`.
"""
