"""Feeding frames to a running agent from another process: a camera app's API.

An agent started with ``source: shm`` creates a shared-memory ring under its ``shmName``
(default ``edge-agent-<thing name>``; the name is logged at start), with ``shmSlots``
slots, each holding every input of its model as the model takes it (shape and dtype:
pre-processing is the producer's). A producer attaches to it by that name and writes each
frame in place, into the next free slot, with no copy of its own::

    from agent.producer import FrameProducer

    with FrameProducer.attach("edge-agent-kitchen-cam", wait_s=30) as producer:
        spec = producer.inputs[0]          # name, dtype and shape of the model's input
        while running:
            with producer.frame() as frame:    # waits for a free slot
                camera.read_into(frame.array)  # fill the slot in place
                frame.label = -1               # optional: a known class, for accuracy
            # published when the block ends; not published if it raises

``frame(timeout_s=0)`` raises :class:`~agent.core.errors.RingFullError` instead of waiting
when the agent is behind, so a camera can drop that frame and go on;
:class:`~agent.core.errors.RingClosedError` says the agent stopped (attach again: it
recreates the ring under the same name when it starts). ``producer.write(array)`` copies a
ready array in instead, checking its shape and dtype (:class:`~agent.core.errors.
InputSpecError`, nothing published, when it does not fit). A model with several inputs
has one array per input in each frame (``frame["name"]``, ``frame.arrays``). The agent
reads each frame once, in order; the sequence number :meth:`FrameProducer.publish`
returns is the ``frame_id`` its results carry, and ``capture_time`` (default: when it was
published) their frame time. This package needs only numpy and :mod:`agent.wire`'s ring
layout: no model runtime, nothing of the agent's device side.

Modules and their public names:

- ``frame_producer``: ``FrameInput``, ``Frame``, ``FrameProducer``
"""

from agent.producer.frame_producer import Frame, FrameInput, FrameProducer

__all__ = ["Frame", "FrameInput", "FrameProducer"]
