"""The running agent's local control socket: `status`, `report-concern` and `flush` talk to
`run` through it. A Unix stream socket, STATE_DIR/agent.sock, mode 0666: any local user may read
the status (nothing secret in it) and report a concern, which must never need the device key or
root ([agent] control_socket; under systemd /run/hedgerow-agent/agent.sock, since the state
directory is the root's alone). One JSON object per line each way; a request is at most MAX_REQUEST bytes and must arrive
within TIMEOUT_S, so a local user cannot wedge the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common.errors import HedgerowError

log = logging.getLogger(__name__)

MAX_REQUEST = 8192
TIMEOUT_S = 5.0

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(HedgerowError):
    """The running agent cannot be reached, or refused the request."""


class ControlServer:
    """Serves requests {"op": NAME, ...} with the handler named NAME."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (a stale socket from a crashed run is replaced)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o666)

    async def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
            reply = await self._answer(line)
        except (TimeoutError, ValueError, ConnectionError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST or not line.endswith(b"\n"):
            return {"ok": False, "error": f"a request is one line of at most {MAX_REQUEST} bytes"}
        request = json.loads(line)
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        handler = self.handlers.get(str(request.get("op")))
        if handler is None:
            return {"ok": False, "error": f"unknown op {request.get('op')!r}"}
        try:
            return {"ok": True, **await handler(request)}
        except HedgerowError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # contained: one bad request never stops the agent
            log.exception("control request %s failed", request.get("op"))
            return {"ok": False, "error": f"internal error: {exc}"}


def ask(path: Path, request: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Send one request to the running agent; raises ControlError if it is not running."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise ControlError(f"hedgerow-agent run is not running ({path}: {exc.strerror})") from exc
    except OSError as exc:
        raise ControlError(f"cannot talk to hedgerow-agent run at {path}: {exc}") from exc
    try:
        reply = json.loads(data)
    except ValueError as exc:
        raise ControlError(f"the agent gave no answer at {path}") from exc
    if not isinstance(reply, dict):
        raise ControlError(f"the agent gave an unreadable answer at {path}")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply
