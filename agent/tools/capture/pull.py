"""``capture pull``: every complete remote batch not pulled yet, verified, merged into a
dataset (:mod:`agent.tools.capture.dataset`).

A batch that fails verification is refused (named in the summary with the reason, nothing
of it merged) and the pull goes on; a source that cannot be listed or read is a
:class:`~agent.tools.capture.errors.CaptureSourceError`. Pulling again is cheap and
changes nothing: pulled batches are remembered, and a capture already in the dataset
(carried by another batch too) is counted as a duplicate, never merged twice.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.device.capture.errors import CaptureFormatError
from agent.tools.capture.dataset import CaptureDataset, DatasetCounts
from agent.tools.capture.errors import CaptureDatasetError
from agent.tools.capture.fetch import fetch_batch
from agent.tools.capture.remote import open_source


@dataclass(frozen=True)
class RefusedBatch:
    key: str  # <thing>/<batch_id>
    reason: str


@dataclass
class PullSummary:
    """What one pull did, and what the dataset holds after it."""

    source: str
    dataset: Path
    batches_listed: int = 0
    batches_pulled: int = 0
    batches_already: int = 0
    captures_new: int = 0
    captures_duplicate: int = 0
    refused: list[RefusedBatch] = field(default_factory=list)
    new_by_rule: dict[str, int] = field(default_factory=dict)
    totals: DatasetCounts | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dataset": str(self.dataset),
            "batches_listed": self.batches_listed, "batches_pulled": self.batches_pulled,
            "batches_already": self.batches_already, "captures_new": self.captures_new,
            "captures_duplicate": self.captures_duplicate,
            "batches_refused": len(self.refused),
            "refused": [{"batch": r.key, "reason": r.reason} for r in self.refused],
            "new_by_rule": self.new_by_rule,
            "dataset_counts": self.totals.to_dict() if self.totals else None,
        }

    def text(self) -> str:
        lines = [f"pulled {self.batches_pulled} batches from {self.source} into "
                 f"{self.dataset} ({self.batches_already} pulled before, "
                 f"{len(self.refused)} refused)",
                 f"captures: {self.captures_new} new, {self.captures_duplicate} duplicate"]
        if self.new_by_rule:
            lines.append("new by rule: " + ", ".join(f"{rule} {n}" for rule, n in
                                                     self.new_by_rule.items()))
        lines += [f"refused {r.key}: {r.reason}" for r in self.refused]
        if self.totals is not None:
            lines.append(f"dataset: {self.totals.captures} captures, {self.totals.labelled} "
                         f"labelled, {self.totals.unlabelled} unlabelled")
        return "\n".join(lines)


def pull_captures(source: str | Path, out: Path, *, endpoint_url: str | None = None,
                  region: str | None = None, client: Any = None,
                  clock: Callable[[], float] = time.time) -> PullSummary:
    """Merge every complete batch of ``source`` (``s3://bucket/prefix`` or a folder) not yet
    in the dataset ``out`` (made when missing) into it; returns the summary.

    ``client`` is a boto3 S3 client to use instead of one made from ``endpoint_url`` and
    ``region`` (and the usual AWS credential chain)."""
    remote = open_source(source, endpoint_url=endpoint_url, region=region, client=client)
    summary = PullSummary(source=remote.description, dataset=out)
    rules: Counter[str] = Counter()
    listed = remote.batches()  # before anything is written: a bad source leaves nothing
    summary.batches_listed = len(listed)
    CaptureDataset.check_target(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CaptureDatasetError(f"cannot make the dataset folder {out}: {err}") from err
    with CaptureDataset.lock(out):
        dataset = CaptureDataset.create(out)
        for batch in listed:
            if batch.key in dataset.pulled:
                summary.batches_already += 1
                continue
            staging = dataset.incoming(f"{batch.thing}--{batch.batch_id}")
            try:
                fetched = fetch_batch(remote, batch, staging)
            except CaptureFormatError as err:
                summary.refused.append(RefusedBatch(batch.key, str(err)))
                shutil.rmtree(staging, ignore_errors=True)
                continue
            now = clock()
            new = [line for line in fetched.lines if line["capture_id"] not in dataset.entries]
            entries = [{**line, "batch_id": batch.batch_id, "pulled_at": now,
                        "label": line.get("label"),
                        "label_source": "application" if line.get("label") is not None
                        else None} for line in new]
            dataset.merge([staging / line["file"] for line in new], entries, {
                "key": batch.key, "thing": batch.thing, "batch_id": batch.batch_id,
                "source": remote.description, "pulled_at": now, "count": len(fetched.lines),
                "new": len(new), "duplicate": len(fetched.lines) - len(new)})
            shutil.rmtree(staging, ignore_errors=True)
            summary.batches_pulled += 1
            summary.captures_new += len(new)
            summary.captures_duplicate += len(fetched.lines) - len(new)
            rules.update(str(line.get("rule")) for line in new)
        shutil.rmtree(dataset.incoming(""), ignore_errors=True)
        summary.new_by_rule = dict(sorted(rules.items()))
        summary.totals = dataset.counts()
    return summary
