"""How the command line reaches a federation: a node (--connect), a federation file, or the demo."""

from __future__ import annotations

from pathlib import Path

import sqlmpc
from sqlmpc import errors


def token_of(args) -> str | None:
    if getattr(args, "token_file", None):
        return Path(args.token_file).read_text().strip()
    return getattr(args, "token", None)


def open_connection(args):
    """The connection the command line asks for: a node (--connect), a federation file, or the demo."""
    kwargs = {"token": token_of(args), "ca": args.ca} if args.connect else {}
    try:
        return sqlmpc.connect(args.connect or args.federation, oracle=args.oracle, persons=args.persons, **kwargs)
    except errors.OperationalError as exc:
        if args.connect and PEER_PORT_REPLY in str(exc):
            raise PeerPortError(args.connect) from None
        raise


PEER_PORT_REPLY = "unknown peer action"     # what a node's peer endpoint answers to an analyst's request


class PeerPortError(errors.OperationalError):
    """--connect names a node's peer port; analysts use its analyst port."""

    def __init__(self, url: str):
        head, _, port = url.rpartition(":")
        hint = f" ({head}:{int(port) + 1})" if port.isdigit() else ""
        super().__init__(f"{url} is a party node's peer port (for the other parties); analysts connect to its "
                         f"analyst port, by default the federation address port + 1{hint}")
