"""The one error hierarchy of swfed.

Every refusal a client or a peer can see is a :class:`SwfedError`: it knows
its stable ``SW_…`` code and its HTTP status, and the message tells the
reader what to do. Handlers raise; exactly one place (``swfed.app``) turns an
error into the JSON body ``{"error": {"code": …, "message": …}}``. Lower-layer
exceptions are mapped once, at the boundary where they happen
(``raise SwfedError(...) from exc``).

::

    SwfedError                      any refusal, with .code and .status
     ├─ BadRequest          400     malformed JSON, wrong types, bad values
     ├─ Unauthorized        401     missing or unknown token
     ├─ Forbidden           403     authenticated but not allowed
     ├─ NotFound            404     unknown room, event, user, route
     ├─ Conflict            409     already exists, wrong state
     ├─ TooLarge            413     body over the configured limit
     ├─ Unavailable         503     a dependency is down
     │   └─ StorageUnavailable  503 SW_STORAGE_UNAVAILABLE: the database refuses
     │                              writes (disk full, read-only, I/O error);
     │                              transient, retry after ``retry_after`` s
     └─ FederationError     4xx/5xx federation refusals (SW_FED_…), ours
         ├─ PeerUnreachable     502/503/504 we could not get an answer from the peer
         │                              (unreachable, timeout, TLS, private address,
         │                              answer too large or malformed): transient
         ├─ SignatureMismatch   401 SW_FED_SIGNATURE_MISMATCH: a signature or key
         │                              we cannot accept
         ├─ PolicyRefusal       403 our policy refuses the peer, room or event
         └─ RemoteRefusal       the *peer* refused us: ``.peer`` and ``.code`` are
                                        its own; never logged, counted or acted
                                        on as a refusal of ours

A peer's answer becomes an error of ours at exactly one boundary
(``swfed.federation.client.error_of``), as a :class:`RemoteRefusal`. Every
code, with its status and meaning, is listed in :mod:`swfed.core.codes`.
"""

from __future__ import annotations

from typing import Any


class SwfedError(Exception):
    """A refusal with a stable code, an HTTP status and a helpful message."""

    status: int = 400
    code: str = "SW_BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"


class BadRequest(SwfedError):
    status = 400
    code = "SW_BAD_REQUEST"


class Unauthorized(SwfedError):
    status = 401
    code = "SW_UNAUTHORIZED"


class Forbidden(SwfedError):
    status = 403
    code = "SW_FORBIDDEN"


class NotFound(SwfedError):
    status = 404
    code = "SW_NOT_FOUND"


class Conflict(SwfedError):
    status = 409
    code = "SW_CONFLICT"


class TooLarge(SwfedError):
    status = 413
    code = "SW_REQUEST_TOO_LARGE"


class Unavailable(SwfedError):
    status = 503
    code = "SW_UNAVAILABLE"


class StorageUnavailable(Unavailable):
    """The database refuses writes for a reason outside the server: disk full,
    read-only file or file system, I/O errors. Nothing was stored; the same
    request succeeds once the admin has fixed the disk (DESIGN §6)."""

    code = "SW_STORAGE_UNAVAILABLE"
    #: Seconds a client or peer should wait before trying again (Retry-After).
    retry_after = 10

    def __init__(self, message: str, *, reason: str = "io_error",
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: disk_full | read_only | io_error, for logs and /healthz.
        self.reason = reason


class FederationError(SwfedError):
    """A federation refusal; ``code`` is one of the ``SW_FED_…`` codes."""

    status = 403
    code = "SW_FED_ERROR"


class PeerUnreachable(FederationError):
    """No usable answer from the peer: it is down, slow, its TLS or address is
    refused, or its answer is too large or malformed. Always transient."""

    status = 503
    code = "SW_FED_PEER_UNREACHABLE"


class SignatureMismatch(FederationError):
    status = 401
    code = "SW_FED_SIGNATURE_MISMATCH"


class PolicyRefusal(FederationError):
    """Our policy (or the room's rules) refuses the peer, the room or the event."""

    status = 403
    code = "SW_FED_POLICY"


class RemoteRefusal(FederationError):
    """A peer answered with a refusal of its own: ``code`` is the peer's code.

    It is the peer's decision about our request, not ours about the peer's: a
    room host's ``SW_FED_ROOM_FULL`` must never be logged as our
    ``federation.policy_rejected`` nor counted as a refusal we made.
    """

    def __init__(self, peer: str, code: str, message: str, *, status: int = 502,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code, status=status, details=details)
        self.peer = peer

    def __repr__(self) -> str:
        return f"RemoteRefusal({self.peer}, {self.code}, {self.message!r})"
