"""Browser attacks on a daemon without a token: cross-site requests and DNS rebinding.

On loopback with no token, any web page open in a browser on the device could POST to the
daemon (a form or text/plain POST needs no CORS preflight), or rebind its own name to
127.0.0.1 and read it. Two rules stop both, and cost a non-browser client nothing:

- Host: the name the request was sent to must be one the daemon answers to (IP literals,
  ``localhost``, api.host, api.allowed_hosts). A rebinding page sends its own name.
- Origin: a mutating request (anything but GET, HEAD, OPTIONS) that carries an Origin
  (every browser sends one on such requests) must come from the daemon's own origin; a
  ``Sec-Fetch-Site`` of cross-site or same-site is refused too. curl sends neither.
"""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def allowed_host_names(host: str, extra: str) -> set[str] | None:
    """The Host names accepted besides IP literals; None accepts any ("*")."""
    names = {n.strip().lower() for n in extra.split(",") if n.strip()}
    if "*" in names:
        return None
    return names | LOOPBACK_NAMES | {host.lower()}


def _split_host(value: str) -> str:
    """``name:port`` or ``[v6]:port`` -> the host part, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class OriginHostMiddleware:
    def __init__(self, app: ASGIApp, names: set[str] | None) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host_header = headers.get("host", "")
        host = _split_host(host_header)
        if self.names is not None and host and not _is_ip(host) and host not in self.names:
            return 400, (f"Host {host!r} is not a name this daemon answers to; add it to "
                         f"api.allowed_hosts")
        if scope["method"] in SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return 403, "cross-site requests may not change this daemon"
        origin = headers.get("origin")
        if origin is None:
            return None
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host_header.strip().lower():
            return 403, f"requests from origin {origin!r} may not change this daemon"
        return None
