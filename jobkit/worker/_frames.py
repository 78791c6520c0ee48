"""The frames on the pipes between the supervisor and a job process: an 8-byte big-endian
length, then that many bytes.

The job process reads and writes them blocking (`read_frame`, `write_frame`): it has nothing
else to do. The supervisor never blocks on a pipe: it keeps what it could not write yet in
`Outgoing`, and assembles what it reads in `Incoming`, so no frame size can stall it.
"""

from __future__ import annotations

import os
import struct

_HEADER = struct.Struct("!Q")
_CHUNK = 1 << 16


def encode(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def _read_exactly(fd: int, n: int) -> bytes | None:
    parts = bytearray()
    while len(parts) < n:
        chunk = os.read(fd, n - len(parts))
        if not chunk:
            return None
        parts += chunk
    return bytes(parts)


def read_frame(fd: int) -> bytes | None:
    """Block until a whole frame arrives on `fd`; None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    return _read_exactly(fd, size) if size else b""


def write_frame(fd: int, payload: bytes) -> None:
    """Block until the whole frame is written to `fd`."""
    view = memoryview(encode(payload))
    while view:
        view = view[os.write(fd, view) :]


class Outgoing:
    """Frames waiting to be written to a non-blocking fd. Not thread-safe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._pending = bytearray()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, payload: bytes) -> None:
        self._pending += encode(payload)
        self.flush()

    def flush(self) -> None:
        """Write what the pipe takes now. Never blocks. Raises OSError if the reader is gone."""
        while self._pending:
            try:
                written = os.write(self.fd, self._pending)
            except BlockingIOError:
                return
            del self._pending[:written]


class Incoming:
    """Frames read from a non-blocking fd. Not thread-safe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._data = bytearray()
        self.eof = False

    def read(self) -> list[bytes]:
        """Read what is there now (never blocks) and return the complete frames; sets `eof`
        when the writer is gone."""
        while not self.eof:
            try:
                chunk = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
            self._data += chunk
        frames = []
        while len(self._data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._data)
            end = _HEADER.size + size
            if len(self._data) < end:
                break
            frames.append(bytes(self._data[_HEADER.size : end]))
            del self._data[:end]
        return frames
