"""TLS for the API client: one verified context per client, built off the run's path.

aiohttp builds two default TLS contexts when it is first imported, and each loads the
system's CA bundle: ~50 ms, a tenth of a short cron run. callsync never uses them:
the client's connector gets a verified context of its own (``verified_context_soon``),
built in a thread while the run opens its database. So aiohttp is imported here (the
client's modules import it through this one) with CA loading skipped: its defaults
trust no CA at all, and a connection that used one would fail verification, never
pass unverified.
"""

from __future__ import annotations

import ssl
import sys
from concurrent.futures import Future, ThreadPoolExecutor


def _import_aiohttp() -> None:
    if "aiohttp" in sys.modules:
        return
    load_default_certs = ssl.SSLContext.load_default_certs
    set_default_verify_paths = ssl.SSLContext.set_default_verify_paths
    ssl.SSLContext.load_default_certs = _skip  # type: ignore[method-assign]
    ssl.SSLContext.set_default_verify_paths = _skip  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401
    finally:
        ssl.SSLContext.load_default_certs = load_default_certs  # type: ignore[method-assign]
        ssl.SSLContext.set_default_verify_paths = set_default_verify_paths  # type: ignore[method-assign]


def _skip(*args: object) -> None:
    return None


_import_aiohttp()


def verified_context() -> ssl.SSLContext:
    """What aiohttp's default would be: the system's CAs (or SSL_CERT_FILE / SSL_CERT_DIR),
    host names checked, HTTP/1.1 over ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(("http/1.1",))
    return context


def verified_context_soon() -> Future[ssl.SSLContext]:
    """``verified_context()``, built in a thread: loading the CAs lets go of the GIL, so it
    runs beside the run's other start-up work."""
    builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callsync-tls")
    try:
        return builder.submit(verified_context)
    finally:
        builder.shutdown(wait=False)  # the thread ends once the context is built
