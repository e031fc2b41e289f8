"""The ``video`` and ``camera`` sources: frames decoded by PyAV, pre-processed into the
loop's bound input buffer.

``video`` takes a file, or a stream URL (``rtsp://``, ``http(s)://``, ``rtmp://``,
``udp://``, ...); ``camera`` a V4L2 device, by index (``0`` is ``/dev/video0``) or path. Both
go through the same ``av.open`` (the camera with ``format="v4l2"``) and the same decoding.

Why PyAV (the ``video`` extra, ``av``) rather than OpenCV: its wheels carry FFmpeg itself,
for x86_64 and aarch64 alike, so a device needs no system codecs; files, RTSP and HTTP
streams and V4L2 cameras all open through one call; frames come straight out as numpy
arrays, resized and converted to RGB in C by swscale (``frame.to_ndarray(width, height,
format="rgb24")``, PyAV's ``reformat``) with no Python per pixel; and it is a small,
well-kept binding of the library every other tool uses. OpenCV's wheels are larger and
decode through a bundled FFmpeg too, with no say over the demuxer's options.

Decoding runs on a thread of its own and hands frames to the loop through a short queue,
so the loop answers API requests while it waits for the next frame (:meth:`VideoSource.
ready` is false meanwhile). A file is read at the loop's pace, no frame dropped; a live
source (a stream URL or a camera) keeps only the newest frames and drops what the loop has
no time for (counted in :attr:`VideoSource.dropped`); a packet that cannot be decoded is
skipped and counted (:attr:`VideoSource.skipped`): a camera app does not stop for one bad
frame. At the end of a file the source starts over when ``loop`` is set; otherwise it ends:
a ``source_ended`` line is logged, :attr:`VideoSource.ended` turns true, the loop stops
filling and keeps answering requests. A live source that breaks off is opened again after a
pause. Resizing is swscale's bilinear filter; the rest of the pre-processing is
:class:`~agent.device.inference.frames.FramePreprocessor`'s.

After each fill, :attr:`VideoSource.frame_id` counts the frames filled (1, 2, ...) and
:attr:`VideoSource.frame_time` is the wall-clock time the frame was decoded. Opening fails
at once with a :class:`SourceError` for a missing file or device, or data PyAV cannot read.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.core.errors import ConfigError, SourceError
from agent.device.inference.frames import NO_LABEL, FramePreprocessor

if TYPE_CHECKING:
    from av.container import InputContainer

log = logging.getLogger("edge_agent.sources")

STREAM_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt|rtp)://", re.IGNORECASE)
OPEN_TIMEOUT_S = 10.0
RETRY_S = (1.0, 10.0)  # a live source is opened again after 1 s, backing off to 10 s


@dataclass(frozen=True)
class VideoInput:
    """What ``av.open`` is given for one source."""

    kind: str  # "video" or "camera"
    url: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    live: bool = False


def video_input(kind: str, path: str | None) -> VideoInput:
    """The input of source ``kind`` (``video`` or ``camera``) for ``sourcePath`` ``path``:
    a :class:`SourceError` when it names no file or device."""
    if kind == "camera":
        device = "/dev/video" + (path or "0") if (path or "0").isdigit() else str(path)
        if not Path(device).exists():
            raise SourceError(f"source camera: no device {device} (sourcePath: a V4L2 device "
                              "index or /dev/videoN)")
        return VideoInput("camera", device, "v4l2", live=True)
    if not path:
        raise SourceError("source video needs sourcePath: a video file or a stream URL")
    if STREAM_URL.match(path):
        options = {"rtsp_transport": "tcp"} if path.lower().startswith("rtsp") else {}
        return VideoInput("video", path, options=options, live=True)
    if not Path(path).is_file():
        raise SourceError(f"source video: {path}: no such file")
    return VideoInput("video", path)


def open_video(source: VideoInput) -> InputContainer:
    """``source`` opened with PyAV, holding a video stream; :class:`SourceError` if not."""
    try:
        import av
    except ModuleNotFoundError as err:
        raise ConfigError(f"source {source.kind} needs PyAV: install the 'video' extra "
                          "(pip install 'edge-inference-agent[video]')") from err
    try:
        container = av.open(source.url, format=source.format, options=source.options,
                            timeout=OPEN_TIMEOUT_S)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise SourceError(f"source {source.kind}: {source.url}: cannot be opened as video: "
                          f"{err}") from err
    if not container.streams.video:
        container.close()
        raise SourceError(f"source {source.kind}: {source.url}: holds no video stream")
    return container


class VideoSource:
    """Frames of a video file, stream or camera, decoded on a thread, into the buffer."""

    def __init__(self, *, buffer: np.ndarray, preprocessor: FramePreprocessor,
                 source: VideoInput, loop: bool = True, depth: int | None = None) -> None:
        self.name = source.kind
        self.input = source
        self._buffer = buffer
        self._pre = preprocessor
        self._loop = loop
        self._live = source.live
        depth = depth or (2 if source.live else 4)  # live: the newest frames only
        height, width = preprocessor.size
        self._reformat: dict[str, Any] = {"width": width, "height": height,
                                          "format": "rgb24", "interpolation": "BILINEAR"}
        self._frames: collections.deque[tuple[np.ndarray, float]] = collections.deque(
            maxlen=depth if self._live else None)
        self._free = threading.Semaphore(depth)  # files: the reader waits for the loop
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self.frame_id = 0
        self.frame_time = 0.0
        self.decoded = 0
        self.dropped = 0
        self.skipped = 0
        self.reopened = 0
        container = open_video(source)  # a bad path or file fails here, before any thread
        self._thread = threading.Thread(target=self._read, args=(container,), daemon=True,
                                        name=f"source-{self.name}")
        self._thread.start()

    @property
    def ended(self) -> bool:
        """True once the source has no more frames (a file, not looped, read to its end)."""
        return self._done and not self._frames

    def ready(self) -> bool:
        """Whether a decoded frame is waiting (fill() then returns at once)."""
        return bool(self._frames)

    def fill(self) -> int:
        frames = self._frames
        if not frames:
            with self._arrived:
                self._arrived.wait_for(lambda: frames or self._done)
            if not frames:
                return NO_LABEL  # ended: the buffer keeps the last frame
        frame, decoded_at = frames.popleft()
        if not self._live:
            self._free.release()
        self._pre.into(self._buffer, frame)
        self.frame_id += 1
        self.frame_time = decoded_at
        return NO_LABEL

    def _put(self, frame: np.ndarray) -> bool:
        if not self._live:
            while not self._free.acquire(timeout=0.1):
                if self._stop.is_set():
                    return False
        elif len(self._frames) == self._frames.maxlen:
            self.dropped += 1  # the oldest waiting frame goes
        with self._arrived:
            self._frames.append((frame, time.time()))
            self._arrived.notify()
        self.decoded += 1
        return True

    def _read(self, first: InputContainer) -> None:
        import av

        container: InputContainer | None = first
        retry, reason, stop = RETRY_S[0], "end of file", self._stop
        try:
            while not stop.is_set():
                if container is None:
                    try:
                        container = open_video(self.input)
                    except SourceError as err:
                        if not self._live:
                            reason = str(err)
                            break
                        log.warning("%s; trying again in %.0f s", err, retry)
                        if stop.wait(retry):
                            return
                        retry = min(retry * 2, RETRY_S[1])
                        continue
                    self.reopened += 1
                before = self.decoded
                try:
                    self._decode(container)
                    reason = "the stream ended" if self._live else "end of file"
                except (av.FFmpegError, OSError, ValueError) as err:
                    reason = f"decoding stopped: {err}"
                finally:
                    container.close()
                    container = None
                if stop.is_set():
                    return
                if not self._live:
                    if self.decoded == before:
                        reason += " (no frame could be decoded)"
                        break
                    if not self._loop:
                        break
                    continue
                log.warning("source %s: %s: %s; opening it again in %.0f s", self.name,
                            self.input.url, reason, retry)
                if stop.wait(retry):
                    return
                retry = RETRY_S[0] if self.decoded > before else min(retry * 2, RETRY_S[1])
            else:
                return
            log.info("source_ended: %s %s: %s after %d frames (%d skipped); the loop stops "
                     "filling and keeps answering API requests", self.name, self.input.url,
                     reason, self.decoded, self.skipped)
        finally:
            if container is not None:
                container.close()
            with self._arrived:
                self._done = True
                self._arrived.notify_all()

    def _decode(self, container: InputContainer) -> None:
        import av

        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if self._live else "AUTO"  # frame threads add delay
        reformat, put, stop = self._reformat, self._put, self._stop
        for packet in container.demux(stream):
            if stop.is_set():
                return
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self.skipped += 1
                continue
            for frame in frames:
                if not put(frame.to_ndarray(**reformat)):
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=OPEN_TIMEOUT_S)
        self._frames.clear()
