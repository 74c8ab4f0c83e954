"""Webhooks: a JSON POST of the alert (Alert.to_json() plus "event") to Teams, Slack or a
safeguarding system. Any 2xx answer is delivery; anything else is retried. Redirects are
never followed (a 3xx is a failure): an alert must not be sent on to a host nobody configured."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from hub.model import Alert
from hub.notify.mail import SendError, alert_link
from hub.notify.settings import LOOPBACK, NotifySettings

TIMEOUT_S = 30


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every 3xx into an HTTPError instead of following it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def webhook_document(settings: NotifySettings, alert: Alert, event: str) -> dict[str, Any]:
    """The JSON body: the alert's documented fields, the event and a link."""
    return {**alert.to_json(), "event": event, "url": alert_link(settings, alert.id)}


def post_json(url: str, document: dict[str, Any], timeout_s: float = TIMEOUT_S) -> None:
    """POST a JSON document; raises SendError unless the receiver answers 2xx."""
    data = json.dumps(document, sort_keys=True).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "hedgerow-hub"},
    )
    # Loopback receivers are reached directly, whatever proxy the environment names.
    host = urlparse(url).hostname  # errors name the host only: hook URLs often hold a secret
    handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
    if host in LOOPBACK:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise SendError(f"webhook {host}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SendError(
            f"webhook {host}: {exc.reason if isinstance(exc, urllib.error.URLError) else exc}"
        ) from exc
    if not 200 <= status < 300:
        raise SendError(f"webhook {host}: HTTP {status}")
