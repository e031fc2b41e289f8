"""The loop demo's training side: ``capture pull`` into a dataset, labels from the demo's
own ground truth through ``capture label --csv`` (standing in for a person), ``capture
export``, and v3's training job on the original split plus the export."""

from __future__ import annotations

import csv
from collections.abc import Callable
from typing import Any

from agent.tools.demo.loop_data import LoopData, tensor_key
from agent.tools.demo.loop_model import build_v3_dir, testset_arrays, train_v3
from agent.tools.demo.loop_options import BUCKET, PREFIX, TARGET, LoopOptions

Say = Callable[[str], None]


def build_dataset(options: LoopOptions, client: Any, endpoint_url: str, data: LoopData,
             say: Say) -> dict[str, Any]:
    from agent.tools.capture.dataset import CaptureDataset
    from agent.tools.capture.export import export_dataset
    from agent.tools.capture.labels import apply_labels
    from agent.tools.capture.pull import pull_captures

    dataset = options.out / "dataset"
    source = f"s3://{BUCKET}/{PREFIX}"
    summary = pull_captures(source, dataset, endpoint_url=endpoint_url, client=client)
    say(f"== 3. capture pull --from {source}: {summary.batches_pulled} batches, "
        f"{summary.captures_new} captures (by rule: " + ", ".join(
            f"{rule} {n}" for rule, n in summary.new_by_rule.items()) + ")")
    truth = data.labels_by_key()
    opened = CaptureDataset.open(dataset)
    rows, unknown, distinct = [], 0, set()
    for capture_id in sorted(opened.entries):
        first = next(iter(opened.load(capture_id).inputs.values()))
        key = tensor_key(first)
        if key not in truth:
            unknown += 1
            continue
        distinct.add(key)
        rows.append((capture_id, str(truth[key])))
    labels_csv = options.out / "labels.csv"
    with labels_csv.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("capture_id", "label"))
        writer.writerows(rows)
    labelled = apply_labels(dataset, labels_csv)
    say(f"   labelling: the demo stands in for a person here, writing {labels_csv.name} "
        f"from the stream's own ground truth ({len(rows)} captures, {len(distinct)} "
        f"distinct images{f', {unknown} not from the stream' if unknown else ''}); "
        f"capture label --csv: {labelled.labelled} labelled, {labelled.unlabelled} "
        "unlabelled")
    exported = export_dataset(dataset, options.out / "export")
    say(f"   capture export: {exported.rows} labelled captures -> {exported.path}")
    return {"pull": summary.to_dict(), "labelled": labelled.to_dict(),
            "distinct_images": len(distinct), "not_from_stream": unknown,
            "export": exported.to_dict()}


def retrain(options: LoopOptions, data: LoopData, say: Say) -> dict[str, Any]:
    """Train v3 (twice with ``check_determinism``: the same captures and seed must give the
    same weights) and write its model directory."""
    work = options.out / "training"
    train_channel = data.write_train_channel(work / "channels" / "train")
    test_channel = data.write_test_channel(work / "channels" / "test")
    captures = options.out / "export"
    runs = [train_v3(train_channel=train_channel, captures_channel=captures,
                     test_channel=test_channel, job_dir=work / f"job-{i}")
            for i in ((1, 2) if options.check_determinism else (1,))]
    first = runs[0]
    deterministic = None if len(runs) == 1 else runs[0].digest == runs[1].digest
    model_dir = build_v3_dir(first.weights, testset_arrays(data.x_test, data.y_test),
                             options.out / "models")
    again = {None: "", True: ", the same on a second run",
             False: ", DIFFERENT on a second run"}[deterministic]
    say(f"== 4. models.digits.train (SM_CHANNEL_TRAIN: {len(data.x_train)} original images, "
        f"SM_CHANNEL_CAPTURES: the export) in {first.elapsed_s:.1f} s: accuracy "
        f"{first.metrics.get('train_accuracy', 0):.3f} on its training rows, "
        f"{first.metrics.get('test_accuracy', 0):.3f} on the original test split")
    say(f"   weights sha256 {first.digest}{again}; exported to {model_dir.name} "
        f"(model.json, ONNX, Neo {TARGET})")
    return {"weights": str(first.weights), "weights_sha256": first.digest,
            "deterministic": deterministic, "metrics": first.metrics,
            "model_dir": str(model_dir), "elapsed_s": round(first.elapsed_s, 2)}
