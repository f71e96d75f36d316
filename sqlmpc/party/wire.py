"""What travels between party processes and their clients: Arrow IPC results and reported errors.

The embedded federation (pipes) and networked nodes (Arrow Flight) use the same
encodings, so an error keeps its sqlmpc class, message and party across either.
"""

from __future__ import annotations

import pyarrow as pa

from sqlmpc import errors


def to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def error_reply(exc: BaseException, party: str | None = None) -> dict:
    """An error as JSON, named by the nearest sqlmpc.errors class (for a client across the network)."""
    name = type(exc).__name__
    if getattr(errors, name, None) is not type(exc):
        name = next((c.__name__ for c in type(exc).__mro__ if getattr(errors, c.__name__, None) is c),
                    "OperationalError")
    return {"error": name, "message": str(exc), "party": getattr(exc, "party", None) or party}


def rebuild(reply: dict, party: str | None = None) -> Exception:
    """The error a party reported, as the same sqlmpc.errors class (its message already rendered).

    Anything that is not an sqlmpc error becomes a PartyError naming the party.
    """
    party = reply.get("party") or party
    cls = getattr(errors, str(reply.get("error")), None)
    message = reply.get("message", "unknown error")
    if not (isinstance(cls, type) and issubclass(cls, errors.Error)):
        return errors.PartyError(f"{reply.get('error')}: {message}", party=party)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.party = party
    return exc
