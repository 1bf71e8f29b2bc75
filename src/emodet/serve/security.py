"""Who may talk to the server: the bearer token, the Host header and the Origin of browser requests.

One ASGI middleware in front of every route, the static page and the WebSocket alike:

- with a token, every path but ``/health`` needs it: ``Authorization: Bearer T``, the ``emodet_token``
  cookie, or ``?token=T`` (a browser opening the page; the answer then sets the cookie, SameSite=Strict
  and HttpOnly, so the page's scripts, uploads and WebSocket carry it without the token in their URLs);
- with ``allowed_hosts`` (a server on 127.0.0.1), a request naming another host is refused: a web page
  that rebinds its own domain name to 127.0.0.1 cannot reach the server through it;
- a browser's WebSocket or upload from a page of another origin is refused.

A refused WebSocket is accepted just long enough to say why (one JSON message) and closed with 1008.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

COOKIE = "emodet_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class AccessMiddleware:
    """Refuse requests without the token (401), to a host not served (400) or from another origin (403)."""

    def __init__(self, app, token: str | None = None, allowed_hosts=None, open_paths=("/health",)):
        self.app, self.token, self.open_paths = app, token, tuple(open_paths)
        self.allowed_hosts = tuple(allowed_hosts) if allowed_hosts else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        problem = self.host_problem(headers) or self.origin_problem(scope, headers)
        from_query = False
        if problem is None and self.token and scope["path"] not in self.open_paths:
            problem, from_query = self.token_problem(scope, headers)
        if problem is None:
            if from_query and scope["type"] == "http":
                send = self._setting_cookie(send)
            return await self.app(scope, receive, send)
        status, reason = problem
        if scope["type"] == "websocket":
            return await refuse_websocket(receive, send, reason)
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return await JSONResponse({"detail": reason}, status, headers=extra)(scope, receive, send)

    def host_problem(self, headers: Headers):
        if self.allowed_hosts is None:
            return None
        host = urlsplit("//" + headers.get("host", "")).hostname or ""
        if host not in self.allowed_hosts:
            return 400, f"Host {headers.get('host', '')!r} is not served here: use http://127.0.0.1:PORT/ (or localhost)"
        return None

    @staticmethod
    def origin_problem(scope, headers: Headers):
        origin = headers.get("origin")
        if not origin or (scope["type"] == "http" and scope["method"] in ("GET", "HEAD")):
            return None
        if urlsplit(origin).netloc != headers.get("host", ""):
            return 403, f"requests from pages of another origin ({origin}) are refused: use this server's own page"
        return None

    def token_problem(self, scope, headers: Headers):
        """``(problem or None, whether the token came in the query string)``."""
        given = bearer(headers.get("authorization", ""))
        if given is None:
            given = cookie_token(headers.get("cookie", ""))
        from_query = False
        if given is None:
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
            from_query = given is not None
        if given is None:
            return (401, "this server needs its token: send 'Authorization: Bearer TOKEN' (a browser: open "
                         "/?token=TOKEN once)"), False
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return (401, "wrong token: use the one the server was started with (--token)"), False
        return None, from_query

    def _setting_cookie(self, send):
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode("latin-1")

        async def wrapped(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return wrapped


def bearer(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def cookie_token(header: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
        return None
    return jar[COOKIE].value if COOKIE in jar else None


async def refuse_websocket(receive, send, reason: str) -> None:
    """Accept, say why in one JSON message, close with 1008 (policy violation)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "error", "message": reason})})
    await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")
