"""Errors a user can fix. The CLI prints them as one line and exits 2 (1 for a fault of the machine)."""

from __future__ import annotations


class AutoembedError(Exception):
    """Bad input: a file, a key or a value the user gave is wrong.

    Args:
        message: what was wrong, what was expected, what was received.
        file: the file it was found in, if any.
        line: the 1-based line in that file, if known.
        key: the dotted key or field name, if any.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, key: str | None = None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "")
        if self.key:
            where = f"{where}: {self.key}" if where else self.key
        return f"{where}: {self.message}" if where else self.message


class EnvironmentFault(AutoembedError):
    """The input is fine but the machine refused: a read-only folder, a full disk, a read-only or full database.

    Printed as one line like any :class:`AutoembedError`, with exit code 1: rerunning the same command once the
    machine is fixed will work.
    """

    exit_code = 1

    @classmethod
    def from_os_error(cls, exc: OSError, what: str = "cannot write") -> EnvironmentFault:
        """``PermissionError(13, ..., '/out')`` -> ``/out: cannot write: Permission denied``."""
        reason = exc.strerror or str(exc) or type(exc).__name__
        return cls(f"{what}: {reason}", file=exc.filename)


class TrialFailed(RuntimeError):
    """A trial could not go on (NaN loss, out of memory); the study records it as FAIL."""
