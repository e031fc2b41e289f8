"""``edge-agent capture …``: from the devices' uploaded captures to a training channel
(:mod:`agent.tools.capture`).

    edge-agent capture pull --from s3://BUCKET/PREFIX|DIR --out DATASET
                            [--endpoint-url URL] [--region R] [--json]
    edge-agent capture list DATASET [--json]
    edge-agent capture label DATASET (--csv FILE | CAPTURE_ID LABEL) [--overwrite] [--json]
    edge-agent capture export DATASET --out DIR [--input NAME] [--keep-shape] [--json]

``pull`` merges every complete batch not pulled yet into DATASET (made when missing):
each batch verified, captures de-duplicated by id; a corrupt batch is refused and named,
the rest merged, and the command then exits 1. ``label`` sets operator labels (an
application's label is kept unless ``--overwrite``); ``export`` writes ``DIR/train.npz``
(the labelled captures, sorted by capture id) for ``models/digits/train.py``'s
``SM_CHANNEL_CAPTURES``. A dataset, label file or source that cannot be used exits 2,
naming the problem. S3 needs boto3 (the ``s3`` or ``tools`` extra); its credentials come
from the usual AWS chain (environment, profile, instance role).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError


def cmd_capture_pull(args: argparse.Namespace) -> int:
    from agent.tools.capture.pull import pull_captures

    summary = pull_captures(args.source, args.out, endpoint_url=args.endpoint_url,
                            region=args.region)
    print(json.dumps(summary.to_dict()) if args.json else summary.text())
    return 1 if summary.refused else 0


def cmd_capture_list(args: argparse.Namespace) -> int:
    from agent.tools.capture.dataset import CaptureDataset

    counts = CaptureDataset.open(args.dataset).counts()
    if args.json:
        print(json.dumps(counts.to_dict()))
        return 0
    print(f"{args.dataset}: {counts.captures} captures from {counts.batches} batches, "
          f"{counts.labelled} labelled, {counts.unlabelled} unlabelled")
    for title, table in (("by rule", counts.by_rule), ("by model", counts.by_model),
                         ("by label source", counts.by_label_source),
                         ("by label", counts.by_label)):
        if table:
            print(f"  {title}: " + ", ".join(f"{key} {n}" for key, n in table.items()))
    return 0


def cmd_capture_label(args: argparse.Namespace) -> int:
    from agent.tools.capture.labels import apply_labels

    if (args.csv is None) == (len(args.pair) == 0) or len(args.pair) not in (0, 2):
        raise ConfigError("capture label takes --csv FILE, or one CAPTURE_ID and its LABEL")
    labels: Path | dict[str, str] = (args.csv if args.csv is not None
                                     else {args.pair[0]: args.pair[1]})
    result = apply_labels(args.dataset, labels, overwrite=args.overwrite)
    print(json.dumps(result.to_dict()) if args.json else result.text())
    return 0


def cmd_capture_export(args: argparse.Namespace) -> int:
    from agent.tools.capture.export import export_dataset

    result = export_dataset(args.dataset, args.out, input_name=args.input,
                            flatten=not args.keep_shape)
    print(json.dumps(result.to_dict()) if args.json else result.text())
    return 0


def add_capture_arguments(sub: Any) -> None:
    """The ``capture`` command group, on the top-level sub-parsers ``sub``."""
    capture = sub.add_parser("capture", help="captures uploaded by devices: pull into a "
                                             "dataset, label, export for training")
    verbs = capture.add_subparsers(dest="capture_command", required=True)
    pull = verbs.add_parser("pull", help="merge every complete uploaded batch into a dataset "
                                         "(verified, de-duplicated)")
    pull.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                      help="s3://BUCKET/PREFIX, or the folder holding the <thing>/ folders")
    pull.add_argument("--out", type=Path, required=True, metavar="DATASET",
                      help="the dataset folder (made when missing)")
    pull.add_argument("--endpoint-url", default=None,
                      help="an S3-compatible endpoint instead of AWS's")
    pull.add_argument("--region", default=None, help="the bucket's AWS region")
    pull.add_argument("--json", action="store_true", help="print one JSON summary")
    pull.set_defaults(func=cmd_capture_pull)

    listing = verbs.add_parser("list", help="a dataset's captures by rule, model version and "
                                            "label")
    listing.add_argument("dataset", type=Path, metavar="DATASET")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_capture_list)

    label = verbs.add_parser("label", help="label captures: one, or a capture_id,label CSV")
    label.add_argument("dataset", type=Path, metavar="DATASET")
    label.add_argument("pair", nargs="*", metavar="CAPTURE_ID LABEL",
                       help="one capture's id and its label")
    label.add_argument("--csv", type=Path, default=None, metavar="FILE",
                       help="a CSV file with the header capture_id,label")
    label.add_argument("--overwrite", action="store_true",
                       help="replace labels the application gave too")
    label.add_argument("--json", action="store_true")
    label.set_defaults(func=cmd_capture_label)

    export = verbs.add_parser("export", help="the labelled captures as a training channel "
                                             "(DIR/train.npz)")
    export.add_argument("dataset", type=Path, metavar="DATASET")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument("--input", default=None, metavar="NAME",
                        help="the model input to export (default: each capture's first)")
    export.add_argument("--keep-shape", action="store_true",
                        help="keep each input's shape (default: rows of [N, features])")
    export.add_argument("--json", action="store_true")
    export.set_defaults(func=cmd_capture_export)
