"""One simulated device: the state a real agent keeps (models, mode, weights, rollout,
trial, cumulative counters per variant) and the messages it would send.

Everything here runs on the fleet's one scheduler thread, so nothing is locked. A
device returns ``(channel, payload)`` pairs; the fleet decides whether they go out
(an offline device's are dropped). Hot messages (metrics, heartbeats) are built as
plain dicts in the wire's canonical JSON; rare ones (register, ack, event, state) go
through the pydantic schemas and :func:`~agent.wire.codec.encode`.

Commands pass the device's own :class:`~agent.wire.gate.CommandGate` and
:class:`~agent.wire.replay.ReplayGuard` here and are answered in
:mod:`agent.tools.fleet_sim.answers`, as the real agent answers them (a replayed command
gets its first ack again). Heartbeats carry groups and profile.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

from agent.core.histogram import BUCKETS_VERSION, quantiles_of
from agent.tools.fleet_sim.answers import answer
from agent.tools.fleet_sim.lanes import Lane, Out, SimContext, new_lane
from agent.tools.fleet_sim.model import ModelBehaviour, ProfileSpec
from agent.wire.canonical import canonical_json
from agent.wire.codec import encode
from agent.wire.commands import Command
from agent.wire.errors import ProtocolError, ReplayError
from agent.wire.gate import CommandGate, rejection
from agent.wire.messages import Ack, Event, Register, UpMessage
from agent.wire.replay import ReplayGuard

U = TypeVar("U", bound=UpMessage)
_REMEMBERED_ACKS = 16


class SimDevice:
    """One device's state, its periodic messages, its traffic and its command gate."""

    def __init__(self, *, thing: str, groups: tuple[str, ...], profile: ProfileSpec,
                 speed: float, connection: int, blue_label: str, ctx: SimContext,
                 now: float) -> None:
        self.thing, self.groups, self.profile, self.speed = thing, groups, profile, speed
        self._profile_json = profile.info.model_dump(mode="json")  # for every heartbeat
        self.connection = connection
        self.ctx = ctx
        self.online = True
        self.seq = 0
        self.guard = ReplayGuard(thing=thing, groups=groups, max_ids=256, max_rollouts=16)
        self.gate = CommandGate(trust=ctx.trust, guard=self.guard)
        self._acks: OrderedDict[str, Ack] = OrderedDict()
        self.in_breach = ctx.breach is not None and ctx.breach.covers(thing, groups)
        self.breach_started_at: float | None = None
        self.breach_cleared_at: float | None = None
        self.boot(blue_label, now)

    def boot(self, blue_label: str, now: float, *, blue_rollout: str | None = None,
             previous: tuple[str, str | None] | None = None) -> None:
        """A (re)start: new boot id, counters from zero, no candidate, no rollout. What the
        store keeps: ``blue_rollout``, the rollout that promoted the model served, and
        ``previous``, the (label, rollout) a rollback returns to."""
        self.boot_id = self.ctx.new_id()
        self.booted_at = self.advanced_at = self.window_start = now
        self.blue = new_lane(blue_label, 0, now)
        self.blue_rollout = blue_rollout
        self.green: Lane | None = None
        self.green_rollout: str | None = None  # the rollout that staged (or steers) green
        self.previous: Lane | None = None  # the blue before a promote, while on trial
        # What a rollback after the trial returns to, and the rollout that promoted it.
        self.previous_label: str | None = previous[0] if previous else None
        self.previous_rollout: str | None = previous[1] if previous else None
        self.green_series = -1
        self.mode, self.weights, self.sample_rate = "serve", (100, 0), 0.0
        self.green_since = now
        self.trial_started: float | None = None
        self.trial_rollout: str | None = None
        self.rollout: tuple[str, int] | None = None

    def reboot(self, now: float) -> None:
        """A restart: a model on trial is dropped for the one before it (as the store does);
        the replay guard's marks are durable on a real device, so they stay."""
        if self.trial_started is not None and self.previous_label is not None:
            self.boot(self.previous_label, now, blue_rollout=self.previous_rollout)
        else:
            kept = None if self.previous_label is None else (self.previous_label,
                                                             self.previous_rollout)
            self.boot(self.blue.label, now, blue_rollout=self.blue_rollout, previous=kept)
        self._note_breach_cleared(now)

    # ---- envelope ---------------------------------------------------------------------

    def _envelope(self, kind: str) -> dict[str, Any]:
        self.seq += 1
        return {"v": 1, "type": kind, "id": self.ctx.new_id(), "thing": self.thing,
                "seq": self.seq, "sent_at": int(self.ctx.wall_clock() * 1000)}

    def message(self, cls: type[U], **fields: Any) -> Out:
        """A schema message from this device, next in its sequence, encoded."""
        self.seq += 1
        message = cls(id=self.ctx.new_id(), thing=self.thing, seq=self.seq,
                      sent_at=int(self.ctx.wall_clock() * 1000), **fields)
        return message.channel, encode(message)

    def models(self) -> dict[str, str]:
        out = {"blue": self.blue.label}
        if self.green is not None:
            out["green"] = self.green.label
        return out

    # ---- periodic messages ------------------------------------------------------------

    def register(self) -> Out:
        return self.message(Register, groups=list(self.groups), profile=self.profile.info,
                             agent_version=self.ctx.agent_version, boot_id=self.boot_id,
                             models=self.models())

    def heartbeat(self, now: float) -> Out:
        body = self._envelope("heartbeat")
        body.update(uptime_s=round(now - self.booted_at, 3), boot_id=self.boot_id,
                    models=self.models(), groups=list(self.groups), profile=self._profile_json)
        return "heartbeat", canonical_json(body)

    def metrics(self, now: float) -> Out:
        self.advance(now)
        variants = {"blue": self._lane_report(self.blue, now)}
        if self.green is not None:
            variants["green"] = self._lane_report(self.green, now)
        body = self._envelope("metrics")
        body.update(boot_id=self.boot_id, variants=variants)
        return "metrics", canonical_json(body)

    def _lane_report(self, lane: Lane, now: float) -> dict[str, Any]:
        base = lane.reported_counts
        window = lane.counts if base is None else lane.counts - base
        window_list = window.tolist()
        inferences = sum(window_list)
        window_s = max(now - lane.reported_at, 0.0)
        errors = lane.errors - lane.reported_errors
        lane.reported_counts, lane.reported_errors, lane.reported_at = \
            lane.counts.copy(), lane.errors, now
        p50, p90, p99 = quantiles_of(window_list)
        counts = lane.counts.tolist()
        rollout_id, rollout_seq = self.rollout if self.rollout else (None, None)
        return {
            "model_version": lane.label, "rollout_id": rollout_id, "rollout_seq": rollout_seq,
            "series": lane.series, "inferences_total": sum(counts),
            "errors_total": lane.errors, "checked_total": lane.checked,
            "correct_total": lane.correct,
            "buckets": {"version": BUCKETS_VERSION, "counts": counts},
            "window_s": round(window_s, 3), "inferences": inferences, "errors": errors,
            "throughput_per_s": round(inferences / window_s, 3) if window_s > 0 else 0.0,
            "p50_us": p50, "p90_us": p90, "p99_us": p99,
        }

    # ---- simulated traffic -------------------------------------------------------------

    def behaviour(self, label: str) -> ModelBehaviour:
        breach = self.ctx.breach
        if breach is not None and self.in_breach and breach.label == label:
            return breach.behaviour
        return self.ctx.green.get(label, self.ctx.blue)

    def advance(self, now: float) -> None:
        """Add the inferences served since the last call to the counters."""
        dt = now - self.advanced_at
        if dt <= 0:
            return
        self.window_start, self.advanced_at = self.advanced_at, now
        rng = self.ctx.rng
        total = int(rng.poisson(self.ctx.inference_rate_hz * dt))
        green_n = 0
        if self.green is not None:
            if self.mode == "shadow" and self.sample_rate > 0:
                green_n = total // max(1, round(1.0 / self.sample_rate))
            elif self.mode == "weighted":
                green_n = total * self.weights[1] // 100
        blue_n = total if self.mode == "shadow" else total - green_n
        if self.green is not None and green_n:
            failed = self._serve(self.green, green_n)
            if self.mode == "weighted":
                blue_n += failed  # a failed green request is answered by blue
        self._serve(self.blue, blue_n)
        if self.trial_started is not None and now - self.trial_started >= self.ctx.trial_s:
            self.trial_started = self.trial_rollout = None  # passed: the old blue is released
            self.previous = None

    def _serve(self, lane: Lane, n: int) -> int:
        if n <= 0:
            return 0
        rng = self.ctx.rng
        behaviour = self.behaviour(lane.label)
        breach = self.ctx.breach
        if self.in_breach and breach is not None and lane.label == breach.label \
                and self.breach_started_at is None:
            self.breach_started_at = self.window_start  # it served from this window on
        failed = int(rng.binomial(n, behaviour.error_rate)) if behaviour.error_rate else 0
        served = n - failed
        probs = self.ctx.buckets.probabilities(behaviour, self.speed)
        lane.counts += rng.multinomial(served, probs)
        lane.errors += failed
        lane.checked += served
        lane.correct += int(rng.binomial(served, self.ctx.blue_accuracy * behaviour.agreement))
        return failed

    def _note_breach_cleared(self, now: float) -> None:
        breach = self.ctx.breach
        if breach is None or self.breach_started_at is None or self.breach_cleared_at:
            return
        if breach.label not in self.models().values():
            self.breach_cleared_at = now

    # ---- commands ----------------------------------------------------------------------

    def receive(self, raw: bytes, topic: str, now: float,
                verified: Command | ProtocolError | None = None) -> list[Out]:
        """Gate and act on one command, answering as the real agent does. ``verified``:
        a group command the fleet already decoded and verified once for every member
        (only this device's replay guard is still to pass), or the error it raised."""
        try:
            if isinstance(verified, ProtocolError):
                raise verified
            if verified is None:
                command = self.gate.admit(raw)
            else:
                self.guard.admit(verified)
                command = verified
        except ReplayError as err:
            first = self._acks.get(err.related_id or "")
            if first is None:
                return [self.message(Event, **rejection(err, topic=topic))]
            return [self.message(Ack, command_id=first.command_id,
                                 rollout_id=first.rollout_id, rollout_seq=first.rollout_seq,
                                 outcome=first.outcome, reason=first.reason,
                                 data=first.data)]
        except ProtocolError as err:
            return [self.message(Event, **rejection(err, topic=topic))]
        self.advance(now)  # traffic so far was served under the previous mode
        out: list[Out] = []
        outcome, reason, data = answer(self, command, now, out)
        self._note_breach_cleared(now)
        self.seq += 1
        ack = Ack(id=self.ctx.new_id(), thing=self.thing, seq=self.seq,
                  sent_at=int(self.ctx.wall_clock() * 1000), command_id=command.command_id,
                  rollout_id=command.rollout_id, rollout_seq=command.rollout_seq,
                  outcome=outcome, reason=reason, data=data)
        self._acks[command.command_id] = ack
        while len(self._acks) > _REMEMBERED_ACKS:
            self._acks.popitem(last=False)
        out.append((Ack.channel, encode(ack)))
        return out

    def state_fields(self, now: float) -> dict[str, Any]:
        fields: dict[str, Any] = {"models": self.models(), "mode": self.mode,
                                  "weights": {"blue": self.weights[0],
                                              "green": self.weights[1]}}
        if self.rollout is not None:
            fields["rollout_id"], fields["rollout_seq"] = self.rollout
        if self.green is not None and self.mode in ("shadow", "weighted"):
            fields["trial"] = {"candidate": self.green.label, "kind": self.mode,
                               "elapsed_s": round(now - self.green_since, 3)}
        elif self.trial_started is not None:
            fields["trial"] = {"candidate": self.blue.label, "kind": "weighted",
                               "elapsed_s": round(now - self.trial_started, 3)}
        return fields
