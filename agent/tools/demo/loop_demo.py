"""``edge-agent demo loop``: the whole improvement loop on this machine, offline.

1. The field has shifted (digits one pixel to the right, :mod:`~agent.tools.demo.loop_data`):
   v1 is right on about half of them.
2. Field devices (real agent processes on one MQTT broker) serve v1 on the shifted stream
   with capture on: low-confidence inferences and a small random sample are kept, sealed
   into batches and uploaded to an S3-compatible server on loopback (moto).
3. ``capture pull`` merges the uploaded batches into a dataset; the demo labels it from its
   own ground truth through ``capture label --csv`` (standing in for a person), and
   ``capture export`` writes the training channel.
4. ``models.digits.train`` trains v3 as a SageMaker-convention job on the original
   training split plus the captures; v3 is exported and packaged as ``digits-v3``.
5. The fleet controller rolls v3 out: a shadow phase, then a canary, then every device,
   promoted because its agreement with the labels and its labelled accuracy on the
   field stream beat v1's (``agreement_with: labels``, ``min_accuracy_gain``).
6. A before/after table (and PNG, summary.json): v3 must beat v1 on the held-out
   shifted set by ``margin``.

Everything started is stopped on the way out, Ctrl-C included, and checked to be gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.controller.controller import FleetController
from agent.controller.report import write_report
from agent.controller.state import ControllerState
from agent.tools.demo.fleet_rollouts import RolloutOutcome, drive, wait_until
from agent.tools.demo.loop_data import load_loop_data
from agent.tools.demo.loop_dataset import build_dataset, retrain
from agent.tools.demo.loop_devices import (
    FieldDevice,
    FieldWatch,
    check_stopped,
    child_pids,
    field_devices,
)
from agent.tools.demo.loop_model import (
    V3_VERSION,
    accuracy,
)
from agent.tools.demo.loop_options import (
    BUCKET,
    KEY_ID,
    PREFIX,
    TARGET,
    V1_LABEL,
    V3_LABEL,
    LoopOptions,
    capture_block,
    rollout_spec,
)
from agent.tools.demo.loop_report import (
    Accuracies,
    LoopFigures,
    accuracy_table,
    shadow_accuracies,
    step_verdicts,
    write_png,
    write_summary,
)
from agent.tools.packaging.build import build_package
from agent.tools.packaging.keys import keys_generate
from agent.tools.s3.local_server import ACCESS_KEY, REGION, SECRET_KEY, LocalS3Server
from agent.wire.mqtt import MqttTransport
from agent.wire.mqtt_config import MqttConfig, broker_address
from agent.wire.signing import Signer

Say = Callable[[str], None]
PROGRESS_EVERY_S = 3.0


@dataclass(frozen=True)
class LoopResult:
    ok: bool
    reason: str
    figures: LoopFigures
    out: Path
    outcome: RolloutOutcome | None


def run_loop_demo(options: LoopOptions, *, say: Say = print) -> LoopResult:
    """Run the demo into ``options.out`` (replaced); its result says whether it passed."""
    out = options.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with _logging_to(out / "demo.log"):
        return _run(options, say)


def _run(options: LoopOptions, say: Say) -> LoopResult:
    started = time.monotonic()
    out = options.out
    figures = LoopFigures()
    timing: dict[str, float] = {}
    figures.stages["timing_s"] = timing

    def mark(stage: str) -> None:
        timing[stage] = round(time.monotonic() - started, 1)

    data = load_loop_data()
    v1_dir = options.models / V1_LABEL
    before = (accuracy(v1_dir, data.x_test, data.y_test),
              accuracy(v1_dir, data.x_heldout, data.y_heldout))
    say(f"== 1. the field has shifted: digits arrive one pixel to the right. {V1_LABEL} is "
        f"right on {100 * before[0]:.1f}% of the original test split, "
        f"{100 * before[1]:.1f}% of the shifted held-out set")
    keys = keys_generate(out / "keys", KEY_ID)
    signer = Signer.from_file(keys.private, key_id=KEY_ID)
    v1_package = build_package(options.models / V1_LABEL, f"{TARGET}-x86_64", signer=signer,
                               out_dir=out / "packages", version=1)
    streams = data.write_streams(out / "streams", options.devices)
    say(f"   capture stream: {len(data.x_field)} shifted images in {len(streams)} disjoint "
        f"slices, one per device, replayed with labels; held out: {len(data.x_heldout)}")
    outcome: RolloutOutcome | None = None
    pids: list[int] = []
    children_before = child_pids()
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(LocalS3Server(out / "s3"))
        pids.append(s3.process.pid if s3.process else 0)
        client: Any = s3.client()
        client.create_bucket(Bucket=BUCKET)
        broker = stack.enter_context(_broker(options))
        state = stack.enter_context(ControllerState(path=out / "controller.db"))
        watch = FieldWatch()
        host, port = broker_address(broker)
        controller = FleetController(transport=MqttTransport(config=MqttConfig(
            host=host, port=port, client_id="loop-controller")), signer=signer, state=state,
            on_ingest=watch.observe)
        controller.start()
        stack.callback(controller.transport.close)
        wait_until(controller.transport.is_connected, timeout_s=15,
                   what=f"the controller to connect to {broker}")
        env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
               "AWS_DEFAULT_REGION": REGION}
        say(f"== 2. {options.devices} field devices serve {V1_LABEL} with capture on "
            f"(lowConfidence < {options.low_confidence:g}, sampleRate "
            f"{options.sample_rate:g}), uploading to s3://{BUCKET}/{PREFIX} on "
            f"{s3.endpoint_url} (moto); broker {broker}")
        devices = stack.enter_context(field_devices(
            options, streams=streams, package=v1_package, public_key=keys.public.read_text(),
            capture=capture_block(options, s3.endpoint_url), broker=broker, env=env))
        pids += [d.pid or 0 for d in devices.values()]
        things = sorted(devices)
        wait_until(lambda: _serving(controller, things, V1_LABEL), timeout_s=90,
                   what=f"every device to register serving {V1_LABEL} (logs: "
                        f"{out / 'devices'}/<thing>/agent.log)", tick=_alive(devices))
        say(f"   {len(things)} devices registered, serving {V1_LABEL}: {', '.join(things)}")
        mark("devices_up")
        figures.stages["capture"] = _capture_phase(options, client, watch, devices, say)
        mark("captured")
        figures.stages["dataset"] = build_dataset(options, client, s3.endpoint_url, data, say)
        mark("dataset")
        trained = retrain(options, data, say)
        figures.stages["training"] = trained
        mark("trained")
        v3_package = build_package(Path(trained["model_dir"]), f"{TARGET}-x86_64",
                                   signer=signer, out_dir=out / "packages",
                                   version=V3_VERSION)
        spec = rollout_spec(options, {TARGET: {
            "url": v3_package.resolve().as_uri(), "version": V3_VERSION,
            "sha256": hashlib.sha256(v3_package.read_bytes()).hexdigest()}})
        say(f"   packaged and signed {v3_package.name}")
        say(f"== 5. the controller rolls {V3_LABEL} out, judged against the labels the "
            f"devices replay (agreement_with: labels, min_agreement {options.min_agreement:g}, "
            f"min_accuracy_gain {options.min_accuracy_gain:+g})")
        outcome = drive(controller, spec, say=say, timeout_s=options.step_timeout_s * 4)
        if outcome.status == "succeeded":
            wait_until(lambda: _serving(controller, things, V3_LABEL), timeout_s=30,
                       what=f"every device to serve {V3_LABEL}", tick=controller.tick)
        mark("rolled_out")
        verdicts = step_verdicts(state, outcome.rollout_id)
        for line in verdicts:
            say(f"   {line['text']}")
        shadow = shadow_accuracies(state, outcome.rollout_id)
        figures.stages["rollout"] = {"id": outcome.rollout_id, "status": outcome.status,
                                     "reason": outcome.reason, "steps": outcome.steps,
                                     "decided_s": round(outcome.decision_s, 1),
                                     "shadow": shadow, "verdicts": verdicts,
                                     "inferences_total": watch.inferences(),
                                     "inferences_v3": watch.inferences(V3_LABEL),
                                     "capture_counters": watch.capture_totals()}
        reports = write_report(state, outcome.rollout_id, out)
        figures.stages["rollout"]["reports"] = [p.name for p in reports]
    figures.stages["stopped"] = check_stopped(pids, children_before)
    mark("stopped")
    v3_dir = Path(figures.stages["training"]["model_dir"])
    figures.v1 = Accuracies(*before, field_shadow=shadow.get("blue_accuracy"))
    figures.v3 = Accuracies(accuracy(v3_dir, data.x_test, data.y_test),
                            accuracy(v3_dir, data.x_heldout, data.y_heldout),
                            field_shadow=shadow.get("green_accuracy"))
    ok, reason = loop_verdict(options, figures, outcome)
    say("\n== 6. before and after\n" + accuracy_table(figures))
    png = write_png(figures, out / "loop.png")
    elapsed = time.monotonic() - started
    write_summary(figures, out / "summary.json", ok=ok, reason=reason, elapsed_s=elapsed)
    say(f"\n{'ok' if ok else 'FAILED'}: {reason}")
    say(f"summary.json{', loop.png' if png else ''} and the rollout's report in {out}; "
        f"every process stopped: {figures.stages['stopped']['all_stopped']}")
    say(f"demo {'finished' if ok else 'FAILED'} in {elapsed:.0f} s")
    return LoopResult(ok=ok, reason=reason, figures=figures, out=out, outcome=outcome)


@contextlib.contextmanager
def _broker(options: LoopOptions) -> Iterator[str]:
    if options.broker:
        yield options.broker
        return
    from agent.tools.brokers.embedded import EmbeddedBroker

    embedded = EmbeddedBroker()
    embedded.start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


def _alive(devices: dict[str, FieldDevice]) -> Callable[[], None]:
    def check() -> None:
        for device in devices.values():
            if not device.running():
                from agent.tools.demo.fleet_rollouts import DemoTimeoutError

                raise DemoTimeoutError(f"{device.thing} exited; its log ends:\n"
                                       f"{device.log_tail()}")
    return check


def _serving(controller: FleetController, things: list[str], label: str) -> bool:
    return all((d := controller.registry.get(t)) is not None and d.models.get("blue") == label
               for t in things)


def _uploaded(client: Any) -> tuple[int, int]:
    """Complete batches on the S3 server and the captures they hold."""
    from agent.tools.capture.remote import BATCH_JSON, open_source

    source = open_source(f"s3://{BUCKET}/{PREFIX}", client=client)
    batches = source.batches()
    captures = sum(int(json.loads(source.read(b, BATCH_JSON, 1 << 16))["count"])
                   for b in batches)
    return len(batches), captures


def _capture_phase(options: LoopOptions, client: Any, watch: FieldWatch,
                   devices: dict[str, FieldDevice], say: Say) -> dict[str, Any]:
    check = _alive(devices)
    deadline = time.monotonic() + options.capture_timeout_s
    said = time.monotonic()
    batches = captures = 0
    while True:
        check()
        batches, captures = _uploaded(client)
        if captures >= options.min_captures:
            break
        if time.monotonic() > deadline:
            from agent.tools.demo.fleet_rollouts import DemoTimeoutError

            raise DemoTimeoutError(
                f"only {captures} captures uploaded after {options.capture_timeout_s:g} s "
                f"(wanted {options.min_captures}); device counters: {watch.capture_totals()}")
        if time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            totals = watch.capture_totals()
            say(f"   {watch.inferences()} inferences, {totals.get('stored', 0)} captures "
                f"stored, {batches} batches ({captures} captures) on the S3 server")
        time.sleep(0.5)
    totals = watch.capture_totals()
    say(f"   {watch.inferences()} inferences on the field stream; captures stored on the "
        f"devices {totals.get('stored', 0)} (by rule: " + ", ".join(
            f"{k.removeprefix('fired_')} {v}" for k, v in sorted(totals.items())
            if k.startswith("fired_") and v) + f"); {batches} batches with {captures} captures "
        "uploaded")
    return {"inferences": watch.inferences(), "batches_uploaded": batches,
            "captures_uploaded": captures, "device_counters": totals}


def loop_verdict(options: LoopOptions, figures: LoopFigures,
             outcome: RolloutOutcome | None) -> tuple[bool, str]:
    gain = figures.gain
    if outcome is None or outcome.status != "succeeded":
        return False, (f"the rollout of {V3_LABEL} did not succeed: "
                       f"{outcome.status if outcome else 'not started'} "
                       f"{outcome.reason if outcome else ''}".rstrip())
    if gain is None or gain < options.margin:
        return False, (f"{V3_LABEL} beats {V1_LABEL} on the held-out shifted set by "
                       f"{100 * (gain or 0):+.1f} points, under the {100 * options.margin:.0f} "
                       "the demo asserts")
    if figures.stages.get("training", {}).get("deterministic") is False:
        return False, ("training v3 twice on the same captures with the same seed gave "
                       "different weights")
    if not figures.stages["stopped"]["all_stopped"]:
        return False, f"processes left running: {figures.stages['stopped']}"
    return True, (f"{V3_LABEL} beats {V1_LABEL} on the held-out shifted set by "
                  f"{100 * gain:+.1f} points (asserted: >= {100 * options.margin:.0f}) and "
                  "serves every device")


@contextlib.contextmanager
def _logging_to(path: Path) -> Iterator[None]:
    """The controller's and the broker's own log lines go to a file, not the narration
    (and the logging set-up is as it was afterwards)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    chatty = {name: logging.getLogger(name).level
              for name in ("amqtt", "transitions", "botocore", "urllib3")}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in chatty:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
        for name, was in chatty.items():
            logging.getLogger(name).setLevel(was)
