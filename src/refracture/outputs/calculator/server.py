"""The calculator's web server: the standard library's ``http.server`` on 127.0.0.1.

Routes: ``/`` the page, ``/calculator.js`` and ``/calculator.css`` its script and styles (shipped
in the package: nothing is fetched from elsewhere), ``/api/model`` the model and its form,
``/api/patient?id=...`` a patient's values from the features file, ``POST /api/predict`` a risk
(JSON in and out). Every answer carries a Content-Security-Policy that lets the page load and
send nothing outside this server, and requests whose ``Host`` is not this server's address are
refused (a web page elsewhere cannot reach the calculator through DNS rebinding).
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from refracture.outputs.calculator.form import Calculator, Refused

__all__ = ["CSP", "make_server"]

#: Nothing but this server: scripts, styles, data and form posts.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/calculator.js": ("calculator.js", "text/javascript; charset=utf-8"),
    "/calculator.css": ("calculator.css", "text/css; charset=utf-8"),
}
_MAX_BODY = 1 << 16


def _static(name: str) -> bytes:
    return resources.files("refracture.outputs.calculator").joinpath("static", name).read_bytes()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _clean(obj: Any) -> Any:
    """Strict JSON: NaN and infinities as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


class _Handler(BaseHTTPRequestHandler):
    calculator: Calculator
    allowed_hosts: frozenset[str]
    server_version = "refracture-calculator"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # requests carry patients' values in their bodies only; nothing is logged

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(_clean(obj), default=_json_default, allow_nan=False).encode()
        self._send(status, body, "application/json")

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if not self.allowed_hosts or host in self.allowed_hosts:
            return True
        self._json(HTTPStatus.FORBIDDEN, {"error": f"unexpected Host header '{host}'"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if not self._host_ok():
            return
        url = urlsplit(self.path)
        if url.path in _STATIC:
            name, content_type = _STATIC[url.path]
            self._send(HTTPStatus.OK, _static(name), content_type)
        elif url.path == "/api/model":
            self._json(HTTPStatus.OK, self.calculator.info())
        elif url.path == "/api/patient":
            pid = (parse_qs(url.query).get("id") or [""])[0]
            try:
                self._json(HTTPStatus.OK, {"id": pid, "values": self.calculator.patient(pid)})
            except KeyError:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no patient '{pid}'"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        if urlsplit(self.path).path != "/api/predict":
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request too large"})
            return
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            values = request.get("values") or {}
            result = self.calculator.predict(values, request.get("vary") or None)
        except Refused as err:
            self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {"refused": err.problems})
            return
        except (ValueError, AttributeError) as err:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"not a calculator request: {err}"})
            return
        self._json(HTTPStatus.OK, result)


def make_server(calculator: Calculator, host: str, port: int) -> ThreadingHTTPServer:
    """The calculator's server bound to ``host:port`` (port 0: a free one), not yet serving."""
    handler: type[_Handler] = type("Handler", (_Handler,), {"calculator": calculator})
    server = ThreadingHTTPServer((host, port), handler)
    bound = server.server_address[1]
    loopback = host in ("127.0.0.1", "localhost", "::1")
    names = {host, "127.0.0.1", "localhost"} if loopback else set()
    handler.allowed_hosts = frozenset(f"{n}:{bound}".lower() for n in names)  # empty: any
    return server
