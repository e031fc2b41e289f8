"""``edge-agent models``: model directories, built or imported.

    edge-agent models build [--out DIR] [--no-cross]
    edge-agent models import SOURCE [SOURCE ...] --out DIR --name NAME [--version N]
        [--target T] [--jetpack X.Y] [--emulate TARGET]...
        [--metadata FILE.yaml] [--description TEXT] [--labels FILE]
        [--layout NCHW|NHWC] [--size HxW] [--mean a,b,c] [--std a,b,c] [--scale X]
        [--channel-order RGB|BGR|GRAY] [--input-dtype D] [--image-input NAME]
        [--softmax | --no-softmax] [--top-k N] [--scores-output NAME]
        [--golden INPUTS.npz [--expected OUTPUTS.npz]] [--reference-onnx MODEL.onnx]
        [--tolerance X] [--golden-count N] [--testset FILE.npz] [--libdlr PATH]
        [--force] [--json]

``build`` trains and exports the reference models (the ``models`` extra). ``import`` turns
SageMaker Neo compilation outputs (``model-<target>.tar.gz``, a directory or ``.zip``; TVM
``export_library`` output; or an ``.onnx`` file) into one model directory
(:mod:`agent.tools.importing`); each SOURCE may be ``TARGET=PATH`` to state its target.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cmd_models_build(args: argparse.Namespace) -> int:
    from models.build import build_all

    cross = False if args.no_cross else None
    built = build_all(args.out, cross=cross)
    print(f"built {len(built)} model directories under {args.out}")
    return 0


def cmd_models_import(args: argparse.Namespace) -> int:
    from agent.tools.importing.golden import GoldenOptions
    from agent.tools.importing.importer import ImportRequest, import_model
    from agent.tools.importing.metadata_file import MetadataOptions

    metadata = MetadataOptions(
        file=args.metadata, name=args.name, version=args.version, description=args.description,
        labels=args.labels, layout=args.layout, size=args.size, mean=args.mean, std=args.std,
        scale=args.scale, channel_order=args.channel_order, input_dtype=args.input_dtype,
        image_input=args.image_input, softmax=args.softmax, top_k=args.top_k,
        scores_output=args.scores_output)
    given = {"tolerance": args.tolerance, "count": args.golden_count,
             "timeout_s": args.reference_timeout}
    golden = GoldenOptions(inputs_file=args.golden, expected_file=args.expected,
                           reference_onnx=args.reference_onnx, libdlr=args.libdlr,
                           **{key: value for key, value in given.items() if value is not None})
    result = import_model(ImportRequest(
        sources=tuple(args.sources), out=args.out, target=args.target, jetpack=args.jetpack,
        emulate=tuple(args.emulate), metadata=metadata, golden=golden, testset=args.testset,
        force=args.force))
    print(json.dumps(result.to_dict()) if args.json else result.summary())
    return 0


def add_models_arguments(sub: Any) -> None:
    """The ``models`` command group, on the top-level sub-parsers ``sub``."""
    models = sub.add_parser("models", help="model directories: build the reference models, "
                                           "import your own").add_subparsers(
        dest="models_command", required=True)
    build = models.add_parser("build", help="train and export the reference models")
    build.add_argument("--out", type=Path, default=Path("build/models"))
    build.add_argument("--no-cross", action="store_true", help="skip ARM cross builds")
    build.set_defaults(func=cmd_models_build)

    imp = models.add_parser(
        "import", help="a model directory from SageMaker Neo / TVM outputs or an ONNX file",
        description="Import compilation outputs (one per target) as one model directory. "
                    "Nothing is written unless every check passes.")
    imp.add_argument("sources", nargs="+", metavar="SOURCE",
                     help="[TARGET=]PATH: a Neo output (directory, .tar.gz/.tgz, .zip) or "
                          "an .onnx file")
    imp.add_argument("--out", type=Path, required=True, help="the model directory to write")
    imp.add_argument("--force", action="store_true", help="replace an existing --out")
    imp.add_argument("--json", action="store_true", help="print one JSON summary")
    imp.add_argument("--name", default=None,
                     help="the model's name (required here or in --metadata)")
    imp.add_argument("--version", type=int, default=None, help="integer version (default 1)")
    target = imp.add_argument_group("targets")
    target.add_argument("--target", default=None,
                        help="Neo target of sources that state none (ml_c5, rasp4b, "
                             "jetson_nano, linux_arm64, ...); default: from compiled.meta, "
                             "else generic linux_<arch> of the code")
    target.add_argument("--jetpack", default=None,
                        help="JetPack line of Jetson artifacts (default: the target's)")
    target.add_argument("--emulate", action="append", default=[], metavar="TARGET",
                        help="also write the host-architecture artifact for emulated "
                             "devices of TARGET (repeatable)")
    meta = imp.add_argument_group("metadata (all optional; flags override --metadata)")
    meta.add_argument("--metadata", type=Path, default=None, metavar="FILE.yaml",
                      help="name, version, description, labels, preprocess, postprocess")
    meta.add_argument("--description", default=None)
    meta.add_argument("--labels", type=Path, default=None, metavar="FILE",
                      help="class labels, one per line (e.g. synset.txt)")
    meta.add_argument("--layout", default=None, help="image layout: NCHW or NHWC")
    meta.add_argument("--size", default=None, metavar="HxW", help="image size, e.g. 224x224")
    meta.add_argument("--mean", default=None, metavar="a,b,c", help="per-channel mean")
    meta.add_argument("--std", default=None, metavar="a,b,c", help="per-channel std")
    meta.add_argument("--scale", type=float, default=None,
                      help="pixel (0-255) multiplier, applied first (e.g. 0.00392156862745098)")
    meta.add_argument("--channel-order", default=None, help="RGB, BGR or GRAY")
    meta.add_argument("--input-dtype", default=None, help="dtype of the image tensor")
    meta.add_argument("--image-input", default=None, metavar="NAME",
                      help="the input an image goes to (default: the first)")
    meta.add_argument("--softmax", action=argparse.BooleanOptionalAction, default=None,
                      help="apply a softmax to the scores output")
    meta.add_argument("--top-k", type=int, default=None, help="classes to report")
    meta.add_argument("--scores-output", default=None, metavar="NAME",
                      help="the output holding class scores (default: the first)")
    gold = imp.add_argument_group(
        "golden vectors (default: computed by the host-architecture artifact in a child "
        "process, on the test set's first cases or seeded random inputs)")
    gold.add_argument("--golden", type=Path, default=None, metavar="INPUTS.npz",
                      help="golden inputs by input name (x for a single input), [N, ...]")
    gold.add_argument("--expected", type=Path, default=None, metavar="OUTPUTS.npz",
                      help="the expected outputs of --golden, by output name (checked by "
                           "the host artifact when there is one)")
    gold.add_argument("--reference-onnx", type=Path, default=None, metavar="MODEL.onnx",
                      help="compute golden outputs with ONNX Runtime on this model")
    gold.add_argument("--tolerance", type=float, default=None,
                      help="max |difference| a device may show (default 1e-4)")
    gold.add_argument("--golden-count", type=int, default=None,
                      help="golden cases to make (default 8)")
    gold.add_argument("--reference-timeout", type=float, default=None,
                      help="seconds the reference run may take (default 120)")
    gold.add_argument("--libdlr", type=Path, default=None,
                      help="explicit libdlr.so for the reference run")
    imp.add_argument("--testset", type=Path, default=None, metavar="FILE.npz",
                     help="evaluation set: x (or one array per input) [N, ...], optional "
                          "integer labels y [N]")
    imp.set_defaults(func=cmd_models_import)
