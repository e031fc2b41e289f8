"""``edge-agent keys generate`` and ``edge-agent package model``.

    edge-agent keys generate --out DIR --key-id ID
    edge-agent package model DIR --key KEYFILE --key-id ID --version N
                             [--target T [--arch A] | --all] [--reference DIR]
                             [--golden-count N] --out DIR

Hook into the main parser with :func:`add_package_arguments` (each sub-command
sets ``func``); both commands return an exit code and raise AgentError.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agent.errors import ConfigError


def add_package_arguments(subparsers: Any) -> None:
    """Add the ``keys`` and ``package`` commands to ``subparsers`` (an add_subparsers())."""
    keys = subparsers.add_parser("keys", help="package signing keys").add_subparsers(
        dest="keys_command", required=True)
    generate = keys.add_parser("generate", help="write <ID>.key (0600) and <ID>.pub")
    generate.add_argument("--out", type=Path, required=True, help="directory for the key files")
    generate.add_argument("--key-id", required=True, help="key id, e.g. controller-2025")
    generate.add_argument("--json", action="store_true", help="print one JSON line")
    generate.set_defaults(func=keys_generate_main)

    package = subparsers.add_parser("package", help="signed model packages").add_subparsers(
        dest="package_command", required=True)
    model = package.add_parser("model", help="package a model directory's Neo artifacts")
    model.add_argument("model_dir", type=Path, metavar="DIR", help="a built model directory")
    model.add_argument("--key", type=Path, required=True, help="private key file (PEM or base64)")
    model.add_argument("--key-id", required=True, help="id of that key in devices' trust stores")
    model.add_argument("--version", type=int, required=True,
                       help="monotonic package version (devices refuse one below their floor)")
    which = model.add_mutually_exclusive_group(required=True)
    which.add_argument("--target", help="Neo target of the artifact, e.g. rasp4b")
    which.add_argument("--all", action="store_true", help="one package per artifact")
    model.add_argument("--arch", default=None,
                       help="CPU architecture with --target (default: the target's own)")
    model.add_argument("--reference", type=Path, default=None,
                       help="model directory whose onnx/model.onnx gives the golden outputs "
                            "(default: DIR's own)")
    model.add_argument("--golden-count", type=int, default=8, help="golden vectors to include")
    model.add_argument("--out", type=Path, required=True, help="directory for the packages")
    model.add_argument("--json", action="store_true", help="print one JSON line")
    model.set_defaults(func=package_model_main)


def keys_generate_main(args: argparse.Namespace) -> int:
    from agent.swap.package_keys import keys_generate

    files = keys_generate(args.out, args.key_id)
    if args.json:
        print(json.dumps({"key_id": files.key_id, "private": str(files.private),
                          "public": str(files.public), "public_b64": files.public_b64}))
    else:
        print(f"private key: {files.private} (keep it secret)")
        print(f"public key:  {files.public}")
        print(f"trust store entry: {{\"keys\": {{\"{files.key_id}\": \"{files.public_b64}\"}}}}")
    return 0


def package_model_main(args: argparse.Namespace) -> int:
    from agent.device.targets import NEO_TARGETS
    from agent.model_dir import artifact_dir_name
    from agent.protocol.signing import Signer
    from agent.swap.package import build_package, build_packages

    if args.arch is not None and args.target is None:
        raise ConfigError("--arch needs --target")
    signer = Signer.from_file(args.key, key_id=args.key_id)
    common: dict[str, Any] = {"signer": signer, "out_dir": args.out, "version": args.version,
                              "reference": args.reference, "golden_count": args.golden_count}
    if args.all:
        built = build_packages(args.model_dir, **common)
    else:
        target = NEO_TARGETS.get(args.target)
        if target is None:
            raise ConfigError(f"unknown Neo target {args.target!r}; known: "
                              f"{', '.join(sorted(NEO_TARGETS))}")
        arch = args.arch or target.arch
        built = [build_package(args.model_dir, artifact_dir_name(target.name, arch), **common)]
    if args.json:
        print(json.dumps({"packages": [str(path) for path in built]}))
    else:
        for path in built:
            print(path)
    return 0
