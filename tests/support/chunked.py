"""An incremental decoder of chunked bodies (RFC 9112 §7.1) for counting large downloads.

It works on slices of a caller's reusable buffer and hands chunk data on as memoryviews, so a body
of any size passes through without being copied or kept.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_LINE = 64 * 1024


class ChunkedDecoder:
    """Feed it ``buffer[start:stop]`` slices; chunk data goes to ``on_data`` as it is decoded."""

    def __init__(self, on_data: Callable[[memoryview], None]) -> None:
        self._on_data = on_data
        self._state = "size"  # size -> data -> data_end -> size ... -> trailer -> done
        self._line = bytearray()
        self._remaining = 0
        self.trailers: list[tuple[bytes, bytes]] = []

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, buffer: bytes | bytearray, start: int, stop: int) -> int:
        """Decode ``buffer[start:stop]``; returns where decoding stopped (``stop`` unless done)."""
        position = start
        while position < stop and self._state != "done":
            if self._state == "data":
                take = min(self._remaining, stop - position)
                self._on_data(memoryview(buffer)[position : position + take])
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = "data_end"
                continue
            newline = buffer.find(b"\n", position, stop)
            end = stop if newline < 0 else newline + 1
            self._line += buffer[position:end]
            position = end
            if len(self._line) > MAX_LINE:
                raise ValueError(f"chunked line longer than {MAX_LINE} bytes")
            if newline >= 0:
                line = bytes(self._line).rstrip(b"\r\n")
                self._line.clear()
                self._on_line(line)
        return position

    def _on_line(self, line: bytes) -> None:
        if self._state == "size":
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"bad chunk size line {line!r}") from None
            self._remaining = size
            self._state = "data" if size else "trailer"
        elif self._state == "data_end":
            if line:
                raise ValueError(f"chunk data not followed by CRLF: {line[:80]!r}")
            self._state = "size"
        elif self._state == "trailer":
            if not line:
                self._state = "done"
                return
            name, colon, value = line.partition(b":")
            if not colon:
                raise ValueError(f"bad trailer line {line!r}")
            self.trailers.append((name.strip(), value.strip()))
