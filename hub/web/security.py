"""Headers on every response and the Origin / Sec-Fetch-Site check on unsafe methods: an ASGI
middleware around the whole application."""

from __future__ import annotations

import logging
from urllib.parse import urlparse

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it Chromium sends "Origin: null" with the page's own form posts,
    # which the Origin check must refuse. same-origin still tells other sites nothing.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_HSTS = (b"strict-transport-security", b"max-age=31536000")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_SITE = frozenset({"same-origin", "none"})  # "none": typed by the person, a bookmark


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}".lower()


class SecurityMiddleware:
    """Adds the security headers; refuses (403) an unsafe request another site started."""

    def __init__(self, app: ASGIApp, *, tls: bool, base_url: str | None) -> None:
        self.app = app
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.trusted = {_origin(base_url)} if base_url else set()

    def _cross_site(self, scope: Scope) -> str | None:
        """Why the request must be refused, or None."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site not in _SAME_SITE:
            return f"Sec-Fetch-Site {fetch_site}"
        origin = headers.get("origin")
        if origin is not None:
            own = {f"{self.scheme}://{headers.get('host', '')}".lower(), *self.trusted}
            if origin.lower() not in own:
                return f"Origin {origin}"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += _HEADERS
                if self.tls:
                    headers.append(_HSTS)
                if not static:
                    # Pages hold children's data: never kept in a shared or browser cache.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        if scope["method"] not in _SAFE_METHODS:
            refused = self._cross_site(scope)
            if refused is not None:
                log.warning(
                    "refused a cross-site %s %s (%s)", scope["method"], scope["path"], refused
                )
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send_with_headers(
                    {
                        "type": "http.response.body",
                        "body": b"Refused: this request came from another site.\n",
                    }
                )
                return
        await self.app(scope, receive, send_with_headers)
