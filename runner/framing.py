"""Frame a byte stream into lines on ``\\n`` only. Pure, no size limit by default.

The CLI writes one JSON object per ``\\n``; a single line can be many MB (file reads,
images). Lines are never split on other line breaks (JSON strings may hold U+2028). An
optional ``max_line_bytes`` drops (and counts) an oversized line instead of failing, so a
pathological line can never kill the reader or block the child on a full pipe.
"""

from __future__ import annotations


class LineFramer:
    __slots__ = (
        "_pending",
        "_pending_len",
        "_skipping",
        "max_line_bytes",
        "skipped_bytes",
        "skipped_lines",
    )

    def __init__(self, max_line_bytes: int | None = None) -> None:
        self.max_line_bytes = max_line_bytes
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._skipping = False
        self.skipped_lines = 0
        self.skipped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Complete lines in ``data`` (and what came before it), without the ``\\n``."""
        if b"\n" not in data:
            self._hold(data)
            return []
        lines = data.split(b"\n")
        tail = lines.pop()
        if self._pending or self._skipping:
            head = lines[0]
            if self._skipping:
                self.skipped_bytes += len(head)
                self._skipping = False
                del lines[0]
            else:
                self._pending.append(head)
                lines[0] = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        if tail:
            self._hold(tail)
        return lines

    def finish(self) -> bytes | None:
        """The unterminated last line, if any (a truncated stream), and reset."""
        if self._skipping or not self._pending:
            self._skipping = False
            self._pending.clear()
            self._pending_len = 0
            return None
        line = b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        return line

    @property
    def pending_bytes(self) -> int:
        return self._pending_len

    def _hold(self, data: bytes) -> None:
        if self._skipping:
            self.skipped_bytes += len(data)
            return
        self._pending.append(data)
        self._pending_len += len(data)
        limit = self.max_line_bytes
        if limit is not None and self._pending_len > limit:
            self.skipped_lines += 1
            self.skipped_bytes += self._pending_len
            self._pending.clear()
            self._pending_len = 0
            self._skipping = True
