"""The small JSON records of the model store: pointers, the trial record and the
rollback records, and the checks on the names they hold.

A record reads back as exactly what was written. A rollout id that is not known is
left out of a record, so that files written before rollout ids were kept read the
same as new ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.device.store.errors import InvalidVersionIdError, StoreCorruptError

_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_ROLLOUT_ID = re.compile(r"[A-Za-z0-9_:.\-]{1,128}")  # the protocol's name characters


@dataclass(frozen=True)
class Trial:
    """A promoted version that is not confirmed yet, and the pointers to restore if it fails."""

    version_id: str
    trial_s: float
    from_current: str | None
    from_previous: str | None
    rollout_id: str | None = None  # the rollout that promoted ``version_id``
    from_current_rollout: str | None = None
    from_previous_rollout: str | None = None


@dataclass(frozen=True)
class Rollback:
    """One rollback: planned (the redo intent) or done (``last_rollback.json``)."""

    from_version: str | None
    to_version: str | None
    previous: str | None
    reason: str
    to_rollout: str | None = None  # the rollout ids the two pointers get
    previous_rollout: str | None = None


def version_id_of(version: int, archive_sha256: str) -> str:
    """The store's name for a package's version: ``v<version>-<first 12 hex of its digest>``,
    so two different packages claiming one version never share a folder."""
    return f"v{version}-{archive_sha256[:12]}"


def check_version_id(version_id: str) -> None:
    if not _VERSION_ID.fullmatch(version_id):
        raise InvalidVersionIdError(f"version id {version_id!r} is not a safe directory name")


def is_rollout_id(rollout_id: str) -> bool:
    """Whether ``rollout_id`` is made of the protocol's name characters."""
    return _ROLLOUT_ID.fullmatch(rollout_id) is not None


def json_bytes(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(obj), sort_keys=True, indent=1).encode()


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None if absent; StoreCorruptError if unreadable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StoreCorruptError(f"{path}: {err}") from err
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StoreCorruptError(f"{path}: {err}") from err
    if not isinstance(obj, dict):
        raise StoreCorruptError(f"{path}: not a JSON object")
    return obj


def _optional_name(obj: Mapping[str, Any], key: str, path: Path, pattern: re.Pattern[str],
                   what: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise StoreCorruptError(f"{path}: {key} {value!r} is not a {what}")
    return value


def optional_id(obj: Mapping[str, Any], key: str, path: Path) -> str | None:
    """The version id under ``key`` (None if absent); StoreCorruptError if it is not one."""
    return _optional_name(obj, key, path, _VERSION_ID, "version id")


def optional_rollout(obj: Mapping[str, Any], key: str, path: Path) -> str | None:
    """The rollout id under ``key`` (None if absent); StoreCorruptError if it is not one."""
    return _optional_name(obj, key, path, _ROLLOUT_ID, "rollout id")


def _with_rollouts(record: dict[str, Any], **rollouts: str | None) -> dict[str, Any]:
    """``record`` plus the rollout ids that are known."""
    record.update({key: value for key, value in rollouts.items() if value is not None})
    return record


def pointer_json(version_id: str, since: int, rollout_id: str | None) -> bytes:
    return json_bytes(_with_rollouts({"version_id": version_id, "since": since},
                                     rollout_id=rollout_id))


def trial_json(trial: Trial) -> bytes:
    return json_bytes(_with_rollouts(
        {"version_id": trial.version_id, "trial_s": trial.trial_s,
         "from_current": trial.from_current, "from_previous": trial.from_previous},
        rollout_id=trial.rollout_id, from_current_rollout=trial.from_current_rollout,
        from_previous_rollout=trial.from_previous_rollout))


def trial_from_json(obj: Mapping[str, Any], path: Path) -> Trial:
    version_id = optional_id(obj, "version_id", path)
    trial_s = obj.get("trial_s")
    if version_id is None or not isinstance(trial_s, (int, float)):
        raise StoreCorruptError(f"{path}: missing version_id or trial_s")
    return Trial(version_id=version_id, trial_s=float(trial_s),
                 from_current=optional_id(obj, "from_current", path),
                 from_previous=optional_id(obj, "from_previous", path),
                 rollout_id=optional_rollout(obj, "rollout_id", path),
                 from_current_rollout=optional_rollout(obj, "from_current_rollout", path),
                 from_previous_rollout=optional_rollout(obj, "from_previous_rollout", path))


def rollback_json(plan: Rollback, since: int | None = None) -> bytes:
    """A rollback intent (``since`` None) or the record of a rollback done."""
    record = _with_rollouts({"from": plan.from_version, "to": plan.to_version,
                             "previous": plan.previous, "reason": plan.reason},
                            to_rollout=plan.to_rollout, previous_rollout=plan.previous_rollout)
    if since is not None:
        record["since"] = since
    return json_bytes(record)


def rollback_from_json(obj: Mapping[str, Any], path: Path) -> Rollback:
    reason = obj.get("reason")
    if not isinstance(reason, str):
        raise StoreCorruptError(f"{path}: no reason")
    return Rollback(from_version=optional_id(obj, "from", path),
                    to_version=optional_id(obj, "to", path),
                    previous=optional_id(obj, "previous", path), reason=reason,
                    to_rollout=optional_rollout(obj, "to_rollout", path),
                    previous_rollout=optional_rollout(obj, "previous_rollout", path))
