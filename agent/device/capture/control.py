"""The capture rules in force, and the signed ``capture`` command that changes them.

The rules come from the device's configuration (``capture.rules``, ``budgetBytes``,
``maxPerHour``) until a ``capture`` command sets others; those are kept in
``<stateDir>/capture/rules.json`` (written atomically, with the command's id and a digest
of the configuration they replaced) and survive a restart, until the next ``capture``
command or a change of the configuration's ``capture`` block, which puts the
configuration's rules back in force.

A command is refused (ack ``rejected``, ``data.code`` ``capture_rules_refused``, and a
``capture_rules_rejected`` event naming the reason) when capture is not enabled in the
configuration (the device owner has not allowed it: a command changes rules, it never
turns capture on against the configuration), when it asks for a budget over
``maxBudgetBytes`` (or under the least budget a configuration may set) or a per-hour
cap over ``maxPerHourLimit``, or when its rules do not validate. The rules in force are
then unchanged. Applying a command sets the store's limits, builds a new tap and installs
its hooks on the router (between two inferences, as every router change does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from agent.device.app.commands import Result
from agent.device.capture.config import CaptureConfig, CaptureRules
from agent.device.capture.errors import CaptureRulesError
from agent.device.capture.tap import CaptureTap
from agent.device.inference.capture_hooks import CaptureHooks
from agent.device.uplink.outbox import Outbox
from agent.wire.commands import CaptureCommand, Command

log = logging.getLogger("edge_agent.capture")
RULES_FILE = "rules.json"
REFUSED = "capture_rules_refused"
_MIN_BUDGET = 64 * 1024  # the least ``budgetBytes`` a configuration may set
NOT_ENABLED = ("capture is not enabled in this device's configuration (capture.enabled is "
               "false): a command cannot turn it on")


class LimitedStore(Protocol):
    def set_limits(self, *, budget_bytes: int, max_per_hour: int) -> None: ...


class HookedRouter(Protocol):
    def set_capture(self, hooks: CaptureHooks | None) -> None: ...


TapBuilder = Callable[[CaptureRules, int], CaptureTap]  # rules, max per hour


@dataclass(frozen=True)
class RulesInForce:
    """What capture does now, and where that came from."""

    enabled: bool
    rules: CaptureRules
    budget_bytes: int
    max_per_hour: int
    source: Literal["configuration", "command"] = "configuration"
    command_id: str | None = None

    def to_json(self, config_digest: str) -> dict[str, Any]:
        return {"v": 1, "enabled": self.enabled, "command_id": self.command_id,
                "config_digest": config_digest, "budget_bytes": self.budget_bytes,
                "max_per_hour": self.max_per_hour,
                "rules": self.rules.model_dump(mode="json")}


def config_digest(config: CaptureConfig) -> str:
    """A digest of the configuration's capture block: a change resets command rules."""
    text = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class CaptureControl:
    """Holds the rules in force; :meth:`handle` is the ``capture`` command's handler."""

    def __init__(self, *, config: CaptureConfig, state_path: Path, build_tap: TapBuilder,
                 router: HookedRouter, store: LimitedStore, outbox: Outbox) -> None:
        self.config = config
        self.state_path = state_path  # the capture directory: rules.json lives in it
        self.build_tap = build_tap
        self.router = router
        self.store = store
        self.outbox = outbox
        self.digest = config_digest(config)
        self.tap: CaptureTap | None = None
        self.refused = 0
        self._fired_before: dict[str, int] = {}  # the picks of the taps replaced so far
        self._skipped_before = 0
        self.in_force = self._load()

    @property
    def rules_path(self) -> Path:
        return self.state_path / RULES_FILE

    def _from_config(self) -> RulesInForce:
        config = self.config
        return RulesInForce(enabled=config.enabled, rules=config.rules,
                            budget_bytes=config.budget_bytes, max_per_hour=config.max_per_hour)

    def _load(self) -> RulesInForce:
        """The rules a command set, unless the configuration changed since (or the file is
        unreadable, which is logged): then the configuration's."""
        path = self.rules_path
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            return self._from_config()
        except (OSError, ValueError) as err:
            log.warning("capture rules in %s unreadable (%s): the configuration's apply",
                        path, err)
            return self._from_config()
        try:
            if saved.get("config_digest") != self.digest:
                log.info("capture configuration changed: its rules replace the command's")
                path.unlink(missing_ok=True)
                return self._from_config()
            return self._check(bool(saved["enabled"]), saved["rules"],
                               saved.get("budget_bytes"), saved.get("max_per_hour"),
                               command_id=saved.get("command_id"))
        except (CaptureRulesError, KeyError, TypeError, AttributeError) as err:
            log.warning("capture rules in %s not usable (%s): the configuration's apply",
                        path, err)
            return self._from_config()

    def start(self) -> None:
        """Put the rules in force on the store and the router (once, before serving)."""
        self._apply(self.in_force)

    def _apply(self, state: RulesInForce) -> None:
        self.store.set_limits(budget_bytes=state.budget_bytes, max_per_hour=state.max_per_hour)
        old = self.tap
        if old is not None:
            for rule, count in old.fired.items():
                self._fired_before[rule] = self._fired_before.get(rule, 0) + count
            self._skipped_before += old.skipped_rate
        if state.enabled:
            self.tap = self.build_tap(state.rules, state.max_per_hour)
            self.router.set_capture(self.tap.hooks())
        else:
            self.tap = None
            self.router.set_capture(None)
        self.in_force = state

    # ---- the command -------------------------------------------------------------------

    def _check(self, enabled: bool, rules: Any, budget: int | None, per_hour: int | None,
               *, command_id: str | None) -> RulesInForce:
        """The rules a command asks for, checked against the configuration's caps."""
        config = self.config
        if not config.enabled:
            raise CaptureRulesError(NOT_ENABLED)
        try:
            checked = CaptureRules.model_validate(rules)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "rules"
            raise CaptureRulesError(f"capture rules: {where}: {first['msg']}") from err
        budget = config.budget_bytes if budget is None else budget
        per_hour = config.max_per_hour if per_hour is None else per_hour
        if not isinstance(budget, int) or not isinstance(per_hour, int):
            raise CaptureRulesError("budget_bytes and max_per_hour are integers")
        if budget > config.max_budget_bytes:
            raise CaptureRulesError(f"budget_bytes {budget} is over this device's "
                                    f"maxBudgetBytes {config.max_budget_bytes}")
        if budget < _MIN_BUDGET:
            raise CaptureRulesError(f"budget_bytes {budget} is under the least budget "
                                    f"{_MIN_BUDGET}")
        if per_hour > config.max_per_hour_limit:
            raise CaptureRulesError(f"max_per_hour {per_hour} is over this device's "
                                    f"maxPerHourLimit {config.max_per_hour_limit}")
        if per_hour < 0:
            raise CaptureRulesError(f"max_per_hour {per_hour} is negative")
        return RulesInForce(enabled=enabled, rules=checked, budget_bytes=budget,
                            max_per_hour=per_hour, source="command", command_id=command_id)

    def handle(self, command: Command) -> Result:
        """The ``capture`` action: check, persist and apply the rules, or refuse them."""
        if not isinstance(command, CaptureCommand):
            return Result("rejected", f"not a capture command: {command.action}")
        args = command.args
        try:
            state = self._check(args.enabled, args.rules.model_dump(), args.budget_bytes,
                                args.max_per_hour, command_id=command.command_id)
        except CaptureRulesError as err:
            return self._refuse(command, str(err))
        self._save(state)
        self._apply(state)
        log.info("capture rules of command %s in force: %s", command.command_id,
                 "off" if not state.enabled else state.rules.model_dump(mode="json"))
        return Result("ok", "capture rules in force" if state.enabled else "capture stopped",
                      data={"enabled": state.enabled, "budget_bytes": state.budget_bytes,
                            "max_per_hour": state.max_per_hour,
                            "sample_rate": state.rules.sample_rate})

    def _refuse(self, command: Command, reason: str) -> Result:
        self.refused += 1
        return refuse(self.outbox, command, reason)

    def _save(self, state: RulesInForce) -> None:
        """``rules.json``, atomically: tmp file, fsync, rename, fsync of the directory."""
        self.state_path.mkdir(parents=True, exist_ok=True)
        path = self.rules_path
        tmp = path.with_name(path.name + ".tmp")
        data = json.dumps(state.to_json(self.digest), sort_keys=True).encode()
        with open(tmp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        fd = os.open(self.state_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- views -------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """The rules' side of the capture metrics: what is in force, the picks of every
        rule since the start, and the picks over the per-hour cap the tap dropped."""
        state, tap = self.in_force, self.tap
        fired = dict(self._fired_before)
        skipped = self._skipped_before
        if tap is not None:
            for rule, count in tap.fired.items():
                fired[rule] = fired.get(rule, 0) + count
            skipped += tap.skipped_rate
        return {"enabled": state.enabled, "rules_from": state.source, "fired": fired,
                "skipped_rate": skipped}


def refuse(outbox: Outbox, command: Command, reason: str) -> Result:
    """Refuse a ``capture`` command: the ``capture_rules_rejected`` event and the ack."""
    log.warning("capture command %s refused: %s", command.command_id, reason)
    outbox.event("capture_rules_rejected", reason[:1024], related_id=command.command_id,
                 data={"code": REFUSED, "reason": reason[:1024]})
    return Result("rejected", reason[:512], data={"code": REFUSED})


def refuse_all(outbox: Outbox) -> Callable[[Command], Result]:
    """The ``capture`` handler of a device whose configuration does not enable capture."""
    return lambda command: refuse(outbox, command, NOT_ENABLED)
