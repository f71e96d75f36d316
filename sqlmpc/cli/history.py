"""The shell's history: one entry per statement (however many lines it was typed on) or dot command."""

from __future__ import annotations

from prompt_toolkit.history import FileHistory


class StatementHistory(FileHistory):
    """A FileHistory that prompt_toolkit cannot append single lines to; the shell adds whole statements."""

    def append_string(self, string: str) -> None:
        """Called by prompt_toolkit for every accepted line: ignored (see ``add``)."""

    def add(self, text: str) -> None:
        """Store one statement or dot command, and offer it to the Up arrow."""
        text = text.strip()
        if text:
            super().append_string(text)
