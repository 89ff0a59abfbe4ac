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
     └─ FederationError     4xx/5xx federation refusals (SW_FED_…)
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
