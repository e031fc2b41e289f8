"""AWS Lambda entry point (``agent.lambda_handler.handler``): event-driven inference on a
Greengrass v2 core device, with the same model loading, verification and DLR backend as
the long-running agent.

Deploy it as a Greengrass Lambda component, pinned (long-lived): the model is loaded
once per process, on the first event (or at start with ``EDGE_LOAD_AT_START=1``), and
every later event reuses it. See ``recipes/lambda/README.md``.

Environment variables
---------------------
Model source, exactly one (details in :mod:`agent.device.lambda_function.loading`):

``EDGE_MODEL_STORE``      the agent's state directory: serve the version the agent
                          promoted (follows its promotions and rollbacks)
``EDGE_INITIAL_PACKAGE``  a signed package (or folder of them), installed through the
                          agent's staging; needs ``EDGE_TRUSTED_KEYS``
``EDGE_MODEL_DIR``        an unsigned model directory; refused unless
                          ``EDGE_ALLOW_UNSIGNED=1`` (development only)

Other settings:

``EDGE_TRUSTED_KEYS``     JSON ``{"key-id": "<Ed25519 public key>"}``, each key PEM text,
                          base64 (``edge-agent keys generate`` prints it) or the path
                          of a file holding either, read as ``serve --trusted-key``
                          and ``trustedKeys`` read theirs; with ``EDGE_MODEL_STORE``
                          it adds a signature check
``EDGE_STATE_DIR``        the Lambda's own store for ``EDGE_INITIAL_PACKAGE``
                          (default ``/tmp/edge-lambda``)
``EDGE_MIN_MODEL_VERSION``  anti-rollback floor for packages (default 0)
``EDGE_GOLDEN_TIMEOUT_SECONDS``  golden-vector check limit when staging (default 10)
``EDGE_MAX_ROWS``         rows per event (default 1024)
``EDGE_NUM_THREADS``      DLR threads (default: the runtime's choice)
``EDGE_RESULT_TOPIC``     also publish each result to this AWS IoT Core topic through
                          Greengrass IPC (needs an ``aws.greengrass.ipc.mqttproxy``
                          access-control policy for ``PublishToIoTCore``)
``EDGE_LOAD_AT_START``    ``1``: load the model when the function starts (pinned)
``EDGE_AGENT_LIBDLR``     path of ``libdlr.so`` when the usual places do not have it

Events and results
------------------
``{"inputs": [[64 numbers], ...]}`` or ``{"input": [64 numbers]}``, with an optional
``"id"`` (string or integer) echoed back. A row is the model's input flattened; ``NaN``
and infinities are refused. The result::

    {"model": "digits-v1", "version": "v1-0123456789ab", "rows": 2,
     "outputs": [[10 scores], [10 scores]], "top1": [3, 7], "latency_us": 41.5}

plus ``"id"`` when given, and ``"published"`` (and ``"publish_error"``) when
``EDGE_RESULT_TOPIC`` is set. ``latency_us`` is the time of the whole row loop.

Errors never reach the Lambda runtime (an uncaught exception stops a pinned function):
every failure is returned as ``{"error": {"type": "<error class>", "message": "..."}}``.
A malformed event changes nothing; a model that fails to load is tried again on the
next event.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

from agent.core.errors import AgentError
from agent.device.lambda_function.batches import InferenceCore, parse_event
from agent.device.lambda_function.loading import (
    LambdaSettings,
    PointerStamp,
    current_version,
    load_model,
    pointer_stamp,
)
from agent.device.uplink.ipc import IpcTransport
from agent.wire.transport import TransportError

log = logging.getLogger("edge_agent.lambda")

ENV_LOAD_AT_START = "EDGE_LOAD_AT_START"
PUBLISH_TIMEOUT_S = 5.0


@dataclass
class _Served:
    core: InferenceCore
    settings: LambdaSettings
    stamp: PointerStamp | None


class _Publisher:
    """Publishes results to AWS IoT Core through the nucleus (Greengrass IPC)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._transport: IpcTransport | None = None

    def publish(self, result: dict[str, Any]) -> str | None:
        """Publish ``result``; None once the nucleus accepted it, else why not."""
        try:
            if self._transport is None:
                transport = IpcTransport.from_environ(request_timeout_s=PUBLISH_TIMEOUT_S)
                try:
                    transport.connect(timeout_s=PUBLISH_TIMEOUT_S)
                except TransportError:
                    transport.close()
                    raise
                self._transport = transport
            payload = json.dumps(result).encode()
            self._transport.publish(self.topic, payload).result(timeout=PUBLISH_TIMEOUT_S + 1)
        except (TransportError, concurrent.futures.TimeoutError) as err:
            return str(err) or "no answer from the nucleus in time"
        except Exception as err:  # e.g. awsiotsdk left out of the function's zip
            log.exception("publishing to %s failed", self.topic)
            return f"{type(err).__name__}: {err}"
        return None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _State:
    """The process's one core (a pinned function keeps it between events)."""

    lock = threading.Lock()
    served: _Served | None = None
    publisher: _Publisher | None = None


def handler(event: object, context: object = None) -> dict[str, Any]:
    """Classify the rows of ``event``; the result, or ``{"error": {...}}``. Never raises."""
    with _State.lock:
        try:
            request = parse_event(event)  # before loading anything: a bad event changes nothing
            served = _serve()
            result = served.core.infer(request.rows)
        except AgentError as err:
            return _error(type(err).__name__, str(err))
        except Exception as err:  # a bug: reported, never raised into the Lambda runtime
            log.exception("the Lambda handler failed")
            return _error("InternalError", f"{type(err).__name__}: {err}")
        if request.request_id is not None:
            result["id"] = request.request_id
        if served.settings.result_topic is not None:
            _publish(served.settings.result_topic, result)
        return result


def current_core() -> InferenceCore | None:
    """The core this process serves with, once loaded."""
    served = _State.served
    return None if served is None else served.core


def warm() -> None:
    """Load the model now rather than on the first event; failures are logged only."""
    with _State.lock:
        try:
            _serve()
        except Exception:
            log.exception("loading the model at start failed; the first event will retry")


def _serve() -> _Served:
    """The loaded core, loading it on first use and following the agent's store."""
    served = _State.served
    if served is None:
        served = _State.served = _load(LambdaSettings.from_environ(os.environ))
        return served
    root = served.settings.store_root
    if root is not None:
        stamp = pointer_stamp(root)
        if stamp != served.stamp:
            if current_version(root) == served.core.version:
                served.stamp = stamp  # rewritten, same version
            else:
                fresh = _load(served.settings)  # raises: the old core stays, retried next event
                _State.served = fresh
                served.core.close()
                log.info("the agent's store moved to %s; now serving it", fresh.core.version)
                served = fresh
    return served


def _load(settings: LambdaSettings) -> _Served:
    loaded = load_model(settings)
    try:
        core = InferenceCore(loaded.backend, label=loaded.label, version=loaded.version,
                             max_rows=settings.max_rows)
    except BaseException:
        loaded.backend.close()
        raise
    return _Served(core=core, settings=settings, stamp=loaded.stamp)


def _publish(topic: str, result: dict[str, Any]) -> None:
    publisher = _State.publisher
    if publisher is None or publisher.topic != topic:
        if publisher is not None:
            publisher.close()
        publisher = _State.publisher = _Publisher(topic)
    problem = publisher.publish(result)
    result["published"] = problem is None
    if problem is not None:
        log.warning("result not published to %s: %s", topic, problem)
        result["publish_error"] = problem


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def _reset_for_tests() -> None:
    """Forget the loaded core and the IPC connection (tests switch settings between cases)."""
    with _State.lock:
        served, _State.served = _State.served, None
        publisher, _State.publisher = _State.publisher, None
    if served is not None:
        served.core.close()
    if publisher is not None:
        publisher.close()


if os.environ.get(ENV_LOAD_AT_START, "").strip() == "1":
    warm()
