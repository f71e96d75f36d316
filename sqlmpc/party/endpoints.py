"""Arrow Flight plumbing of a node: actions as JSON calls and results, and who is calling
(bearer tokens for analysts)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pyarrow as pa
import pyarrow.flight as flight


def results(*items) -> list[flight.Result]:
    out = []
    for item in items:
        data = item if isinstance(item, (bytes, bytearray)) else json.dumps(item, default=str).encode()
        out.append(flight.Result(pa.py_buffer(data)))
    return out


def call(client: flight.FlightClient, action: str, body: dict, *, timeout: float | None = None,
         headers: list | None = None) -> list[bytes]:
    options = flight.FlightCallOptions(timeout=timeout, headers=headers or [])
    return [r.body.to_pybytes() for r in client.do_action(flight.Action(action, json.dumps(body).encode()),
                                                          options=options)]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class AnalystIdentity(flight.ServerMiddleware):
    """The caller on the analyst endpoint: its name, or why its authentication failed."""

    def __init__(self, name: str | None, failure: str | None = None, client: str | None = None):
        self.name = name
        self.failure = failure
        self.client = client


class TokenAuth(flight.ServerMiddlewareFactory):
    """Bearer tokens: sha256(token) -> analyst name; None = no tokens (loopback development only).

    A failed authentication is audited (``on_failure``), never with the token.  Only
    ``do_action`` calls get through with a failure, so that ``_Endpoint.do_action``
    can log the caller's address before refusing; every other call is refused here.
    """

    def __init__(self, tokens: dict[str, str] | None, on_failure):
        self.tokens = tokens
        self.on_failure = on_failure

    def start_call(self, info, headers):
        if self.tokens is None:
            return AnalystIdentity("anonymous")
        name, failure = self.authenticate(headers)
        if failure is None:
            return AnalystIdentity(name)
        client = _header(headers, "user-agent")
        if info.method == flight.FlightMethod.DO_ACTION:
            return AnalystIdentity(None, failure, client)
        self.on_failure(failure, str(info.method), None, client)
        raise flight.FlightUnauthenticatedError(failure)

    def authenticate(self, headers) -> tuple[str | None, str | None]:
        """(analyst, None) for a known token, else (None, why not)."""
        value = _header(headers, "authorization") or ""
        if not value.startswith("Bearer "):
            return None, "missing bearer token"
        digest = hashlib.sha256(value[len("Bearer "):].strip().encode()).hexdigest()
        for known, name in self.tokens.items():
            if hmac.compare_digest(known, digest):
                return name, None
        return None, "invalid analyst token"


def _header(headers: dict, name: str) -> str | None:
    values = headers.get(name) or headers.get(name.title()) or []
    value = values[0] if values else None
    return value.decode(errors="replace") if isinstance(value, bytes) else value
