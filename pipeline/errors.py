"""The error tree. Every failure callsync knows about is one of these, and the CLI
maps each to an exit code in one place (``exit_code``)::

    CallsyncError                      1  finished with failures
    ├── ConfigError                    2  bad/missing config file, key or token
    ├── UsageError                     2  bad command-line arguments
    ├── AuthError                      3  401 bad token / 403 missing scope
    ├── LockHeldError                 75  another run holds the lock (EX_TEMPFAIL)
    ├── ApiError                       1  an HTTP exchange that failed for good
    │   ├── RetryableApiError             429, 5xx, timeouts, dropped connections
    │   │   ├── RateLimitedError          429, with the server's Retry-After
    │   │   ├── ConnectFailedError        no connection, so the request was never sent
    │   │   ├── ApiTimeoutError           no answer within [api] timeout_s
    │   │   └── MalformedListingError     a calls page of the wrong shape (its window is halved)
    │   ├── UncertainWriteError        4  a POST that may or may not have taken effect
    │   ├── NotFoundError                 404
    │   ├── UnsafeUrlError                a URL we refuse to fetch (scheme, foreign host)
    │   ├── UntrustedCertificateError     a host's TLS certificate failed verification
    │   └── BodyTooLargeError             a body over its cap ([api]/[media] max_*_mb)
    ├── RunStopped                        the whole run stops; no window or job catches it
    │   ├── ApiUnreachableError        1  the API is gone (circuit breaker)
    │   ├── UntrustedApiError          1  the API's own TLS certificate failed verification
    │   └── RunInterrupted       130/143  SIGINT/SIGTERM: the run stopped taking new work
    ├── SignalReceived       130/143  SIGINT/SIGTERM during a change (numbers buy, flows create...)
    ├── WindowNotConvergedError        1  a window kept moving while we paged it
    │   └── ImplausibleListingError       its listing cannot be true (total, page size, repeats)
    ├── MediaError                     1  a download that failed after all retries
    ├── DiskError                      1  disk full / permission denied on our own files
    ├── DatabaseLockedError            1  an analyst holds the snapshot read-write (query, status)
    ├── DatabaseMemoryError            1  DuckDB hit [database] memory_limit
    └── BudgetExhausted                0  the request budget is spent: a clean pause

Messages are one line, meant for a human reading a cron mail, and never contain
the bearer token.
"""

from __future__ import annotations

import os


class CallsyncError(Exception):
    exit_code = 1


class ConfigError(CallsyncError):
    exit_code = 2


class UsageError(CallsyncError):
    exit_code = 2


class AuthError(CallsyncError):
    exit_code = 3


class LockHeldError(CallsyncError):
    exit_code = 75


class ApiError(CallsyncError):
    def __init__(self, message: str, *, status: int | None = None, url: str | None = None):
        super().__init__(message)
        self.status = status
        self.url = url


class RetryableApiError(ApiError):
    pass


class RateLimitedError(RetryableApiError):
    def __init__(self, message: str, *, retry_after: float | None, url: str | None = None):
        super().__init__(message, status=429, url=url)
        self.retry_after = retry_after


class ConnectFailedError(RetryableApiError):
    """The connection failed before the request was sent: safe to send again, even a POST."""


class UncertainWriteError(ApiError):
    """A POST whose answer never came (a timeout, a connection dropped after sending) or was
    a 5xx: it may have taken effect, so it is never sent again blindly (a purchase costs money).
    Its own exit code, so a script can tell "look before trying again" from a refusal (400, 409)."""

    exit_code = 4


class ApiTimeoutError(RetryableApiError):
    pass


class NotFoundError(ApiError):
    # A 404 answering a retry, after an attempt that may have reached the API: for a
    # DELETE, most likely that attempt's own work (client.delete_flow).
    after_attempt_that_may_have_acted = False


class RunStopped(CallsyncError):
    """The whole run must stop (not one window or job): nothing catches it on the way up."""


class ApiUnreachableError(RunStopped):
    """Not an ApiError: no single request or window failed, the API is gone, so nothing
    catches it per window or per job and the run stops (committing what it has)."""


class UnsafeUrlError(ApiError):
    pass


class UntrustedCertificateError(ApiError):
    """Not retried: sending again will not make the certificate trusted."""


class UntrustedApiError(RunStopped):
    """The API's own certificate: every request would fail the same way, so the run stops."""


class BodyTooLargeError(ApiError):
    pass


class MalformedListingError(RetryableApiError):
    pass


class RunInterrupted(RunStopped):
    """Raised by every request once SIGINT or SIGTERM arrived; exits 128 + the signal."""

    def __init__(self, signal_number: int, name: str):
        super().__init__(
            f"interrupted by {name}: stopped taking new work; what was complete is committed,"
            " and the next run continues"
        )
        self.exit_code = 128 + signal_number
        self.signal_name = name


class SignalReceived(CallsyncError):
    """SIGINT or SIGTERM while a change was in flight (interrupt.unless_signalled): the
    caller says what that leaves; exits 128 + the signal."""

    def __init__(self, signal_number: int, name: str):
        super().__init__(f"interrupted by {name}")
        self.exit_code = 128 + signal_number


class WindowNotConvergedError(CallsyncError):
    pass


class ImplausibleListingError(WindowNotConvergedError):
    """The API's listing of a window cannot be true: a total beyond any real account, more
    rows on a page than its meta.per_page, pages repeating each other, a total no paging
    reaches. The window fails at once; the rest of the run goes on."""


class MediaError(CallsyncError):
    pass


class DiskError(CallsyncError):
    pass


class DatabaseLockedError(CallsyncError):
    pass


class DatabaseMemoryError(CallsyncError):
    pass


class BudgetExhausted(CallsyncError):
    exit_code = 0


def command_hint(args: str) -> str:
    """A callsync command to suggest in a message, as the user can type it: under `uv run`
    (which sets $UV) the bare `callsync` is usually not on PATH."""
    return f"uv run callsync {args}" if os.environ.get("UV") else f"callsync {args}"


def first_line(exc: BaseException) -> str:
    """An exception's message, its first line only (DuckDB's run on with context), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
