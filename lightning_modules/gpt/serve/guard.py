"""What every request passes before a route runs, and the access log.

A page on another site can make the user's browser send requests to a server on 127.0.0.1: a
"simple" cross-origin POST (text/plain, no preflight) reaches the handler, and DNS rebinding
(a foreign name that resolves to 127.0.0.1) lets that page read the replies too. So: the `Host`
header must name the bound address (loopback names for a loopback bind) or one of
`serve.allowed_hosts`; a browser's `Origin`, when sent, must be such a host too; a POST must say
`Content-Type: application/json` (a cross-origin page cannot send that without a preflight we
never answer); and with a token, every route but /health needs it.
"""

import logging
import secrets
import time
from urllib.parse import urlsplit

from fastapi import Request

from lightning_modules.gpt.serve.protocol import ApiError
from lightning_modules.gpt.serve.settings import LOOPBACK, ServeSettings

log = logging.getLogger("hylab.serve")
WILDCARD = ("0.0.0.0", "::", "")


def host_name(value: str) -> str:
    """The host part of a Host header or an origin's netloc, without port or IPv6 brackets."""
    return (urlsplit(f"//{value}").hostname or "").lower()


def served_names(settings: ServeSettings) -> set[str] | None:
    """Host names this server answers to; None: any (bound to every interface, behind its token)."""
    if settings.host in WILDCARD:
        return None
    names = {host_name(settings.host) or settings.host.lower(), *(h.lower() for h in settings.allowed_hosts)}
    if settings.host in LOOPBACK:
        names |= set(LOOPBACK)
    return names


def make_guard(settings: ServeSettings, token: str | None):
    names = served_names(settings)

    async def guard(request: Request) -> None:
        host = host_name(request.headers.get("host", ""))
        if names is not None and host not in names:
            raise ApiError(421, f"this server answers to {sorted(names)}, not Host {host!r}: add it to serve.allowed_hosts", "wrong_host")
        origin = request.headers.get("origin")
        if origin is not None and (names is not None or settings.allowed_hosts):
            allowed = names if names is not None else {h.lower() for h in settings.allowed_hosts}
            if origin == "null" or host_name(urlsplit(origin).netloc) not in allowed:
                raise ApiError(403, f"requests from pages of {origin} are refused (cross-origin)", "forbidden_origin")
        if token and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if request.url.path == "/":
                given = given or request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), token.encode()):
                raise ApiError(401, "missing or wrong access token: send 'Authorization: Bearer <token>'", "invalid_api_key")
        if request.method == "POST":
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise ApiError(415, f"Content-Type is {kind or 'missing'}; send 'Content-Type: application/json'", "unsupported_media_type")
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > settings.max_body_bytes:
                raise ApiError(413, f"the request body has {length} bytes; the limit is {settings.max_body_bytes}", "body_too_large")

    return guard


class AccessLog:
    """One line per request when its response ends: client, method, path (never the query: the
    page's URL may carry the token), status, seconds. Plain ASGI, so streams are timed to the end."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status, logged = time.perf_counter(), [0], [False]

        def line() -> None:
            if not logged[0]:
                logged[0] = True
                client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
                log.info(f'{client} "{scope["method"]} {scope["path"]}" {status[0] or "-"} {time.perf_counter() - started:.3f}s')

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                line()  # before the last byte leaves: a client that reads the log after its reply finds the line
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            line()
