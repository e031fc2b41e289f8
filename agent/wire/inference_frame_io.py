"""Frames of :mod:`agent.wire.inference_frames` read from and written to a stream socket.

:class:`FrameReader` keeps one receive buffer per connection: a small frame usually
arrives whole in one ``recv_into`` and is handed out as views on that buffer (valid until
the next read), so reading a request allocates nothing per frame. A frame larger than the
buffer may grow it up to ``retain`` bytes; a larger one, or one read with
``own_payload``, gets a payload buffer of its own, received into directly.
:func:`send_frame` writes prelude, header and every payload buffer with one ``sendmsg``
(scatter-gather: tensor bytes are never joined into a message first).
"""

from __future__ import annotations

import socket

from typing_extensions import Buffer

from agent.wire.inference_frames import MAX_HEADER, PRELUDE_SIZE, Frame, pack_prelude, parse_prelude

BUFFER_SIZE = 64 * 1024
RETAIN = 2 * 1024 * 1024


class FrameReader:
    """Reads frames from one connected socket (one reader per connection and thread)."""

    def __init__(self, sock: socket.socket, *, max_payload: int, max_header: int = MAX_HEADER,
                 buffer_size: int = BUFFER_SIZE, retain: int = RETAIN) -> None:
        self.sock = sock
        self.max_payload = max_payload
        self.max_header = max_header
        self.retain = max(retain, buffer_size)
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def read(self, *, own_payload: bool = False) -> Frame | None:
        """The next frame, or None when the peer closed the stream between frames.

        A malformed prelude raises :class:`~agent.core.errors.RequestFormatError` (or
        :class:`~agent.core.errors.RequestTooLargeError` for a length over the limits);
        the stream is then out of step and must be closed. A stream that ends inside a
        frame raises :class:`ConnectionResetError`. The frame's header and payload are
        views on this reader's buffer unless ``own_payload`` (the header is then
        ``bytes`` and the payload a ``bytearray`` of its own, which stay valid).
        """
        if self._start == self._end:
            self._start = self._end = 0
        if not self._fill(PRELUDE_SIZE):
            return None
        start = self._start
        kind, request_id, header_len, payload_len = parse_prelude(
            self._view[start:start + PRELUDE_SIZE], max_header=self.max_header,
            max_payload=self.max_payload)
        head_end = PRELUDE_SIZE + header_len
        total = head_end + payload_len
        if own_payload or total > self.retain:
            self._fill(head_end)
            start = self._start
            header = bytes(self._view[start + PRELUDE_SIZE:start + head_end])
            self._start += head_end
            return Frame(kind, request_id, header,
                         (self._own(payload_len),) if payload_len else ())
        self._fill(total)
        start = self._start
        view = self._view
        self._start = start + total
        return Frame(kind, request_id, view[start + PRELUDE_SIZE:start + head_end],
                     (view[start + head_end:start + total],) if payload_len else ())

    def _own(self, size: int) -> bytearray:
        payload = bytearray(size)
        take = min(size, self._end - self._start)
        if take:
            payload[:take] = self._view[self._start:self._start + take]
            self._start += take
        view = memoryview(payload)
        got = take
        while got < size:
            count = self.sock.recv_into(view[got:])
            if not count:
                raise ConnectionResetError("the connection closed inside a frame")
            got += count
        return payload

    def _fill(self, need: int) -> bool:
        """At least ``need`` bytes buffered from ``_start``; False at a clean end."""
        while self._end - self._start < need:
            if self._start + need > len(self._buf):
                self._make_room(need)
            count = self.sock.recv_into(self._view[self._end:])
            if not count:
                if self._end == self._start:
                    return False
                raise ConnectionResetError("the connection closed inside a frame")
            self._end += count
        return True

    def _make_room(self, need: int) -> None:
        """Move the pending bytes to the front, in a new, larger buffer when ``need`` does
        not fit (views handed out before stay on the old one)."""
        pending = self._end - self._start
        if need > len(self._buf):
            size = max(need, 2 * len(self._buf))
            buf = bytearray(min(size, max(need, self.retain)))
            buf[:pending] = self._view[self._start:self._end]
            self._buf, self._view = buf, memoryview(buf)
        else:
            self._view[:pending] = self._view[self._start:self._end]
        self._start, self._end = 0, pending


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Write ``frame`` (prelude, header, each payload buffer) in one ``sendmsg`` when the
    socket takes it all, finishing a partial send piece by piece."""
    header = frame.header
    header_len = memoryview(header).nbytes
    payload_len = 0
    for part in frame.payload:
        payload_len += memoryview(part).nbytes
    buffers: list[Buffer] = [pack_prelude(frame.kind, frame.request_id, header_len,
                                          payload_len)]
    if header_len:
        buffers.append(header)
    buffers.extend(frame.payload)
    sent = sock.sendmsg(buffers)
    if sent != PRELUDE_SIZE + header_len + payload_len:
        _send_rest(sock, buffers, sent)


def _send_rest(sock: socket.socket, buffers: list[Buffer], sent: int) -> None:
    for part in buffers:
        view = memoryview(part).cast("B")
        if sent >= len(view):
            sent -= len(view)
            continue
        sock.sendall(view[sent:])
        sent = 0
