"""An analyst's connection to a party node: ``sqlmpc.connect("sqlmpc://host:port", token=...)``.

``sqlmpc://host:port`` speaks Arrow Flight over TLS to the node's analyst port
and sends the token as ``authorization: Bearer ...``; the CA certificate that
signed the node's certificate comes from ``ca=`` or ``$SQLMPC_CA`` (else the
system's roots).  ``sqlmpc+insecure://127.0.0.1:port`` is plaintext, for a node
started with ``--insecure-loopback``.  The token may also come from
``$SQLMPC_TOKEN`` or ``$SQLMPC_TOKEN_FILE``.

The node receiving the query coordinates it; the result comes back as Arrow
with the suppression flags and the leakage ledger, exactly like the embedded
federation's.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.flight as flight

from sqlmpc import errors
from sqlmpc.catalog import load_federation
from sqlmpc.party.wire import from_ipc, rebuild
from sqlmpc.result import Result
from sqlmpc.sql import Query, parse
from sqlmpc.sql.params import bind_parameters

SCHEMES = ("sqlmpc", "sqlmpc+insecure")


def is_url(target) -> bool:
    return isinstance(target, str) and target.split("://", 1)[0] in SCHEMES and "://" in target


def _read(value: str | bytes | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value).read_bytes()


class RemoteConnection:
    """The backend of dbapi.Connection for a networked federation (``query(sql) -> Result``)."""

    def __init__(self, url: str, *, token: str | None = None, ca: str | bytes | None = None,
                 timeout: float | None = None):
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES or not parts.hostname or not parts.port:
            raise errors.InterfaceError(f"bad node URL '{url}': expected sqlmpc://host:port")
        self.url = url
        self.host, self.port = parts.hostname, parts.port
        if token is None:
            token = os.environ.get("SQLMPC_TOKEN")
        if token is None and os.environ.get("SQLMPC_TOKEN_FILE"):
            token = Path(os.environ["SQLMPC_TOKEN_FILE"]).read_text()
        self.token = token.strip() if token else None
        self.timeout = timeout
        if parts.scheme == "sqlmpc+insecure":
            if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
                raise errors.InterfaceError("sqlmpc+insecure:// is for loopback nodes only")
            self.client = flight.FlightClient(f"grpc+tcp://{self.host}:{self.port}")
        else:
            ca_pem = _read(ca if ca is not None else os.environ.get("SQLMPC_CA"))
            kwargs = {"tls_root_certs": ca_pem} if ca_pem else {}
            self.client = flight.FlightClient(f"grpc+tls://{self.host}:{self.port}", **kwargs)
        self.federation = self.catalog()
        self.last_stats = None

    dry_run = False

    def _call(self, action: str, body: dict, timeout: float | None = None) -> list[bytes]:
        headers = [(b"authorization", f"Bearer {self.token}".encode())] if self.token else []
        options = flight.FlightCallOptions(timeout=timeout, headers=headers)
        try:
            return [r.body.to_pybytes() for r in
                    self.client.do_action(flight.Action(action, json.dumps(body).encode()), options=options)]
        except flight.FlightUnauthenticatedError as exc:
            raise errors.OperationalError(f"{self.url}: authentication failed ({_first_line(exc)})") from None
        except flight.FlightUnavailableError as exc:
            raise errors.OperationalError(f"{self.url}: node unreachable ({_first_line(exc)})") from None
        except flight.FlightError as exc:
            raise errors.OperationalError(f"{self.url}: {_first_line(exc)}") from None

    def query(self, query: str | Query, params=None, progress=None) -> Result:
        """The node checks, plans and coordinates (and audits a refusal); it gets the text as written,
        or with the parameters in as literals."""
        if isinstance(query, str):
            query = parse(query)
        text = bind_parameters(query.tree, params).sql("duckdb") if params else query.sql
        out = self._call("query", {"sql": text}, self.timeout)
        meta = json.loads(out[0])
        if "error" in meta:
            raise rebuild(meta)
        result = Result(from_ipc(out[1]), meta["suppressed"], meta["leakage"], meta.get("min_cell_size"))
        self.last_stats = meta
        return result

    def catalog(self):
        """The node's shared catalog as a Federation (for EXPLAIN, SHOW TABLES, DESCRIBE; no data, no
        party's private settings), with the fingerprint the parties compare."""
        reply = json.loads(self._call("catalog", {}, 15.0)[0])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "federation.toml"
            path.write_text(reply["toml"])
            return replace(load_federation(path), fingerprint=reply["fingerprint"])

    def restart(self) -> None:
        """Nothing to restart here: the node's coordinator starts every query afresh."""

    def status(self) -> dict:
        return json.loads(self._call("status", {}, 15.0)[0])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def format_status(status: dict) -> str:
    lines = [f"coordinator: {status['coordinator']}  (analyst: {status['analyst']})"]
    fps = {p.get("fingerprint") for p in status["parties"].values() if p.get("reachable")}
    for name, p in status["parties"].items():
        if p.get("reachable"):
            lines.append(f"  {name:<12} reachable  version {p.get('version')}  catalog {p.get('fingerprint', '')[:16]}"
                         f"  {'TLS' if p.get('tls') else 'PLAINTEXT'}  {'busy' if p.get('busy') else 'idle'}")
        else:
            lines.append(f"  {name:<12} UNREACHABLE  {p.get('error')}")
    lines.append("catalogs identical" if len(fps) == 1 else f"catalogs DIFFER ({len(fps)} fingerprints)")
    return "\n".join(lines)
