"""The exception tree of Neurelay: every error the package raises on purpose.

One root, so callers can catch everything of ours and nothing else. Classes
defined elsewhere say where, in brackets; tests/test_errors.py checks that
this drawing matches the classes and that no exception class in `neurelay`
is left out::

    NeurelayError
    ├── ProtocolError        a frame or request the protocol refuses; carries an ErrorCode
    ├── ConfigError          a configuration file or variable that does not validate
    ├── BusError             NATS or JetStream failed underneath us
    │   ├── BusUnavailable   NATS is not connected; the operation may be retried later
    │   │   └── IncompleteReplay  a history read lost a message on the way [gateway.replaying]
    │   ├── PayloadTooLarge  the message exceeds what NATS accepts (its max_payload)
    │   └── ReplayError      JetStream answered a direct get with an error [gateway.replaying]
    ├── KubeError            a Kubernetes API request failed; carries the status [operator.kube]
    │   └── ApplyConflict    an apply would overwrite fields another client set [operator.kube]
    ├── SecretMissing        a referenced Secret, or its key, does not exist [operator.kube]
    ├── RetryLater           a resource cannot be reconciled now [operator.context]
    └── ClientError          raised by `neurelay.client` (which exports these)
        ├── ServerError      the gateway answered with an `error` frame; carries its code
        ├── RequestTimeout   no reply (or no connection) within the client's request timeout
        ├── IdInFlight       a request's id is that of another request still awaiting its reply
        └── ConnectionLost   the WebSocket closed and the client was told not to reconnect

Third-party exceptions are mapped to these at the module that talks to the
third party (`raise BusUnavailable(...) from e`), never further in.
"""

from __future__ import annotations

from neurelay.protocol.codes import ErrorCode


class NeurelayError(Exception):
    """Root of every exception Neurelay raises on purpose."""


class ProtocolError(NeurelayError):
    """A frame or request refused with a stable error code.

    `frame_id` and `channel` are echoed in the `error` frame so the client
    can tell which of its requests failed.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        frame_id: str | int | None = None,
        channel: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.frame_id = frame_id
        self.channel = channel


class ConfigError(NeurelayError):
    """A configuration that does not validate; the message names the field."""


class BusError(NeurelayError):
    """NATS or JetStream refused or failed an operation."""


class BusUnavailable(BusError):
    """NATS is not connected (or did not answer in time); retry later."""


class PayloadTooLarge(BusError):
    """The message is larger than the NATS server's max_payload."""


class ClientError(NeurelayError):
    """Raised by the Python client."""


class ServerError(ClientError):
    """The gateway answered a request with an `error` frame.

    `code` is an `ErrorCode`, or the string sent when this version does not know the code.
    """

    def __init__(self, code: ErrorCode | str, message: str, channel: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.channel = channel


class RequestTimeout(ClientError):
    """No reply, or no connection to send on, within the request timeout."""


class IdInFlight(ClientError):
    """A request's id is that of another request still awaiting its reply.

    The gateway's reply carries only the id, so the two replies could not be told apart.
    """


class ConnectionLost(ClientError):
    """The connection closed for good: the client was closed or must not reconnect."""

    def __init__(self, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code
