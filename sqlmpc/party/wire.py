"""What travels between party processes and their clients: Arrow IPC results, reported errors,
and the framed pipes of the embedded federation.

The embedded federation (pipes) and networked nodes (Arrow Flight) use the same
encodings, so an error keeps its sqlmpc class, message and party across either.
"""

from __future__ import annotations

import os
import select
import struct

import pyarrow as pa

from sqlmpc import errors


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def error_reply(exc: BaseException, party: str | None = None, *, ledger: list | None = None) -> dict:
    """An error as JSON: its class name, message (as it may leave the party: a data error without the
    value it quotes), the party it names (else ``party``), the stage that party was in (``exc.stage``)
    and, when given, what the party opened before it.

    An error that is not an sqlmpc class keeps its own name: :func:`rebuild` turns it into a
    PartyError naming the party."""
    reply = {"error": type(exc).__name__, "message": errors.shareable(exc), "party": getattr(exc, "party", None) or party,
             "stage": getattr(exc, "stage", None)}
    if ledger is not None:
        reply["ledger"] = ledger
    return reply


def rebuild(reply: dict, party: str | None = None) -> Exception:
    """The error a party reported, as the same sqlmpc.errors class (its message already rendered).

    Anything that is not an sqlmpc error becomes a PartyError naming the party.
    """
    party = reply.get("party") or party
    cls = getattr(errors, str(reply.get("error")), None)
    message = reply.get("message", "unknown error")
    if not (isinstance(cls, type) and issubclass(cls, errors.Error)):
        kind = str(reply.get("error"))
        exc = errors.PartyError(message if message.startswith(kind) else f"{kind}: {message}", party=party)
    else:
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.party = party
    exc.stage = reply.get("stage")          # where the party was: local, input, shuffle, join, ...
    return exc


class Channel:
    """Length-prefixed frames over a pair of pipe file descriptors (JSON control, Arrow results)."""

    def __init__(self, read_fd: int, write_fd: int):
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        self.writer = os.fdopen(write_fd, "wb", buffering=0)

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(struct.pack("!Q", len(data)) + data)

    def send(self, text: str) -> None:
        self.send_bytes(text.encode())

    def _read(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.reader.read(n)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv_bytes(self) -> bytes:
        (n,) = struct.unpack("!Q", self._read(8))
        return self._read(n)

    def recv(self) -> str:
        return self.recv_bytes().decode()

    def poll(self, timeout: float) -> bool:
        return bool(select.select([self.reader], [], [], timeout)[0])

    def close(self) -> None:
        for f in (self.reader, self.writer):
            try:
                f.close()
            except OSError:
                pass
