"""The terminal the report is printed on can go away mid-run (closed window, dropped ssh,
a killed ``| tee``). Writing to it then fails (EIO on a hung-up tty, EPIPE on a pipe); that
must neither crash the run nor lose its results. ``guard_std_streams`` wraps stdout and
stderr so that the first failed write points the dead descriptor at /dev/null (so nothing,
not even the interpreter's final flush, fails on it again) and the rest of the output is
dropped; the log file and the results JSON carry what the terminal would have shown."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sys
from typing import Any, TextIO

GONE = {errno.EIO, errno.EPIPE, errno.ENXIO, errno.ECONNRESET, errno.EBADF}


class TerminalStream(io.TextIOBase):
    """A text stream that survives the loss of the file behind it."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self.lost: OSError | None = None

    @property
    def stream(self) -> TextIO:
        return self._stream

    def write(self, text: str) -> int:
        if self.lost is None:
            try:
                self._stream.write(text)
            except OSError as exc:
                self._lose(exc)
        return len(text)

    def flush(self) -> None:
        if self.lost is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._lose(exc)

    def isatty(self) -> bool:
        if self.lost is not None:
            return False
        with contextlib.suppress(OSError, ValueError):
            return self._stream.isatty()
        return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _lose(self, exc: OSError) -> None:
        if exc.errno not in GONE:
            raise exc
        self.lost = exc
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)  # what is still buffered now drains into /dev/null
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()
        import structlog

        structlog.get_logger("coordinator.terminal").warning(
            "terminal gone, its output is dropped", error=str(exc)
        )


def guard_std_streams() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once; before logging is configured, so that
    its console sink is wrapped too)."""
    if not isinstance(sys.stdout, TerminalStream) and sys.stdout is not None:
        sys.stdout = TerminalStream(sys.stdout)
    if not isinstance(sys.stderr, TerminalStream) and sys.stderr is not None:
        sys.stderr = TerminalStream(sys.stderr)
