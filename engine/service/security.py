"""Request rules shared by every gen404 HTTP service: where it may bind, who may call it,
and how big a request body may be. Torch-free and FastAPI-free (plain ASGI), so the
generation endpoint and the validation service apply the same rules the same way.

- Loopback binds are open. Binding anything else (0.0.0.0, a LAN address) needs an API key,
  unless the operator says --insecure explicitly.
- With a key, every path except the open ones (default /health, so supervisors can probe)
  needs `Authorization: Bearer <key>`; otherwise 401.
- Bodies over the path's limit get 413 before the body is read: at once from
  Content-Length, or as soon as a chunked body passes the limit.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

API_KEY_ENV = "GEN404_API_KEY"
DEFAULT_BODY_LIMIT = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BindRefused(ValueError):
    """A non-loopback bind without an API key or an explicit --insecure."""


def is_loopback_host(host: str) -> bool:
    """True for names that only this machine can reach: localhost, 127.0.0.0/8, ::1."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, treat it as exposed


def resolve_api_key(cli_value: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key from the command line, else from GEN404_API_KEY; blank counts as none."""
    env = os.environ if env is None else env
    key = cli_value if cli_value is not None else env.get(API_KEY_ENV)
    key = (key or "").strip()
    return key or None


def check_bind(host: str, api_key: str | None, insecure: bool) -> None:
    """Raise BindRefused when `host` would expose an unauthenticated service."""
    if is_loopback_host(host) or api_key or insecure:
        return
    raise BindRefused(
        f"refusing to bind {host}: it is reachable from other machines; set an API key "
        f"(--api-key or {API_KEY_ENV}) or pass --insecure to serve it without one"
    )


def bearer_matches(authorization: str | None, api_key: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <key>` header value."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), api_key.encode())


def json_error_body(error: str, detail: Any = None) -> bytes:
    """The error shape every gen404 service answers: {"error": ..., "detail": ...}."""
    return json.dumps({"error": error, "detail": detail}).encode()


class _BodyTooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware applying the API key and the body-size limits before the app runs."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None = None,
        body_limits: Mapping[str, int] | None = None,
        default_body_limit: int = DEFAULT_BODY_LIMIT,
        open_paths: Iterable[str] = ("/health",),
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.body_limits = dict(body_limits or {})
        self.default_body_limit = default_body_limit
        self.open_paths = frozenset(open_paths)

    def body_limit(self, path: str) -> int:
        return self.body_limits.get(path, self.default_body_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        needs_key = self.api_key and path not in self.open_paths
        if needs_key and not bearer_matches(headers.get("authorization"), self.api_key or ""):
            await _respond(
                send,
                401,
                json_error_body("unauthorized", "send Authorization: Bearer <api key>"),
                [(b"www-authenticate", b"Bearer")],
            )
            return
        limit = self.body_limit(path)
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > limit
            except ValueError:
                await _respond(send, 400, json_error_body("bad Content-Length header", declared))
                return
            if too_large:
                await _respond(send, 413, _too_large_body(limit))
                return

        received = 0
        app_responded = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body past the limit: answer now, stop reading
                    if not app_responded and not refused:
                        refused = True
                        await _respond(send, 413, _too_large_body(limit))
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_responded
            if refused:
                return  # whatever the app makes of the aborted read, the client has its 413
            if message["type"] == "http.response.start":
                app_responded = True
            await send(message)

        # Apps may swallow the exception (FastAPI turns body errors into 400s): the 413 is sent
        # from inside receive() so it wins either way.
        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)


def _too_large_body(limit: int) -> bytes:
    return json_error_body("request body too large", f"the limit for this path is {limit} bytes")


async def _respond(send: Send, status: int, body: bytes, extra_headers: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += extra_headers or []
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
