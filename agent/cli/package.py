"""``edge-agent keys generate``, ``edge-agent package model`` and ``package component``.

    edge-agent keys generate --out DIR --key-id ID [--json]
    edge-agent package model DIR --signing-key FILE --key-id ID [--version N]
                             (--target T [--arch A] | --all | --backend onnx)
                             [--reference DIR] [--golden-count N] --out DIR
    edge-agent package component --signing-key FILE --key-id ID --out DIR [--models DIR]
                             [--model NAME] [--model-version N ...]
                             [--uri-base s3://BUCKET/PREFIX | file]
                             [--s3-packages] [--trust-signing-key] [--wheel FILE]
                             [--capture-bucket BUCKET [--capture-prefix PREFIX]]

The signing key is ``--signing-key``/``--key-id`` (:mod:`agent.cli.options`), as in every
command that signs; ``--key`` is only ever a TLS key. ``keys generate`` prints where each
form of the new public key goes: the PEM file for ``serve --trusted-key ID=PATH``, the
base64 line for a Greengrass configuration's ``trustedKeys`` (either form works in either
place, :func:`agent.wire.keys.public_key_from`).

Hook into the main parser with :func:`add_package_arguments` (each sub-command
sets ``func``); the commands return an exit code and raise AgentError.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.cli.options import add_signing_arguments, signer_from_args
from agent.core.errors import ConfigError


def add_package_arguments(subparsers: Any) -> None:
    """Add the ``keys`` and ``package`` commands to ``subparsers`` (an add_subparsers())."""
    keys = subparsers.add_parser("keys", help="package signing keys").add_subparsers(
        dest="keys_command", required=True)
    generate = keys.add_parser(
        "generate", help="write <ID>.key (0600) and <ID>.pub; print where each form goes")
    generate.add_argument("--out", type=Path, required=True, help="directory for the key files")
    generate.add_argument("--key-id", required=True, help="key id, e.g. controller-2025")
    generate.add_argument("--json", action="store_true", help="print one JSON line")
    generate.set_defaults(func=keys_generate_main)

    package = subparsers.add_parser("package", help="signed model packages").add_subparsers(
        dest="package_command", required=True)
    model = package.add_parser(
        "model", help="package a model directory's Neo artifacts or its ONNX model",
        description="Write signed packages <name>-v<N>[-<variant>]-<target>-<arch>.tar.gz "
                    "(one Neo artifact) or <name>-v<N>[-<variant>]-onnx.tar.gz (the ONNX "
                    "model, for devices running the onnx backend). The label is always "
                    "<name>-v<N>[-<variant>] of the package version N.")
    model.add_argument("model_dir", type=Path, metavar="DIR", help="a built model directory")
    add_signing_arguments(model, what="the packages' manifests")
    model.add_argument("--version", type=int, default=None, metavar="N",
                       help="monotonic integer package version (devices refuse one below "
                            "their floor; default: model.json's version); another than "
                            "model.json's is written into the packaged model.json and label")
    which = model.add_mutually_exclusive_group()
    which.add_argument("--target", help="Neo target of the artifact as SageMaker spells it, "
                                        "e.g. rasp4b, ml_c5, linux_arm64")
    which.add_argument("--all", action="store_true",
                       help="one package per artifact, and the ONNX package when DIR has "
                            "onnx/model.onnx")
    model.add_argument("--arch", default=None,
                       help="CPU architecture with --target (default: the target's own)")
    model.add_argument("--backend", choices=("dlr", "onnx"), default="dlr",
                       help="onnx: the ONNX package (target and arch 'any'); default dlr")
    model.add_argument("--reference", type=Path, default=None,
                       help="model directory whose onnx/model.onnx gives the golden outputs "
                            "(default: DIR's golden.npz, else DIR's own onnx/model.onnx)")
    model.add_argument("--golden-count", type=int, default=8, help="golden vectors to include")
    model.add_argument("--out", type=Path, required=True, help="directory for the packages")
    model.add_argument("--json", action="store_true", help="print one JSON line")
    model.set_defaults(func=package_model_main)
    _add_component_arguments(package)


def _add_component_arguments(package: Any) -> None:
    from agent.tools.greengrass.component import DEFAULT_RECIPES, PLACEHOLDER_BASE

    component = package.add_parser(
        "component", help="the agent and its model as Greengrass components (GDK layout)",
        description="Write com.edgeinference.Agent and com.edgeinference.Model.<name> (the "
                    "model's name) in the Greengrass Development Kit layout: gdk-config.json, "
                    "recipe.yaml and greengrass-build/ (recipes with artifact URIs and "
                    "SHA-256 digests, artifacts), plus greengrass-local/ for greengrass-cli "
                    "local deployments. Both components have a manifest for each platform "
                    "the model has builds for (amd64, aarch64, arm), and only those; the "
                    "model's ONNX package (onnx/model.onnx) rides in the amd64 and aarch64 "
                    "manifests. A model with only an ONNX export is built for amd64 and "
                    "aarch64, and the agent defaults to the onnx backend.")
    component.add_argument("--models", type=Path, default=Path("build/models"),
                           help="built model directories, or one model directory "
                                "(default: build/models)")
    component.add_argument("--model", default=None, metavar="NAME",
                           help="the model to package when --models holds several "
                                "(default: the only one)")
    add_signing_arguments(component, what="the model packages")
    component.add_argument("--out", type=Path, required=True,
                           help="output folder; its component folders are replaced")
    component.add_argument("--model-version", type=int, nargs="+", action="extend",
                           dest="model_versions", metavar="N",
                           help="model versions to package, one component version each "
                                "(N -> N.0.0; default: every version in --models)")
    component.add_argument("--uri-base", default=PLACEHOLDER_BASE,
                           help="artifact URIs: GDK's placeholders (default), "
                                "s3://BUCKET/PREFIX, or 'file' (file:// paths, read only by "
                                "the emulated nucleus)")
    component.add_argument("--s3-packages", action="store_true",
                           help="the agent fetches s3:// model packages itself: depend on "
                                "aws.greengrass.TokenExchangeService")
    component.add_argument("--capture-bucket", default=None, metavar="BUCKET",
                           help="turn capture on in the agent's configuration, uploading "
                                "batches to this S3 bucket with the credentials of "
                                "aws.greengrass.TokenExchangeService (a HARD dependency then; "
                                "the token exchange role needs s3:PutObject, s3:GetObject, "
                                "s3:ListBucket: recipes/iot/capture-upload-policy.json)")
    component.add_argument("--capture-prefix", default="captures", metavar="PREFIX",
                           help="key prefix of the uploaded batches (default: captures)")
    component.add_argument("--trust-signing-key", action="store_true",
                           help="add the signing key to the agent's default trustedKeys")
    component.add_argument("--wheel", type=Path, default=None,
                           help="use this agent wheel instead of building one")
    component.add_argument("--recipes", type=Path, default=DEFAULT_RECIPES,
                           help="recipe templates and install-agent.sh (default: recipes/)")
    component.add_argument("--bucket", default="edge-inference-components",
                           help="gdk-config publish.bucket")
    component.add_argument("--region", default="us-east-1", help="gdk-config publish.region")
    component.add_argument("--json", action="store_true", help="print one JSON line")
    component.set_defaults(func=package_component_main)


def keys_generate_main(args: argparse.Namespace) -> int:
    from agent.tools.packaging.keys import keys_generate

    files = keys_generate(args.out, args.key_id)
    trusted_key = f"{files.key_id}={files.public}"
    trusted_keys = {files.key_id: files.public_b64}
    if args.json:
        print(json.dumps({
            "key_id": files.key_id, "private": str(files.private), "public": str(files.public),
            "public_pem": files.public.read_text(), "public_b64": files.public_b64,
            "signing_arguments": ["--signing-key", str(files.private), "--key-id", files.key_id],
            "trusted_key_argument": trusted_key, "trusted_keys": trusted_keys}))
        return 0
    print(f"private key  {files.private}  (keep it secret)")
    print(f"  sign with:  --signing-key {files.private} --key-id {files.key_id}")
    print(f"public key, PEM file  {files.public}")
    print(f"  edge-agent serve:  --trusted-key {trusted_key}")
    print(f"public key, base64  {files.public_b64}")
    print(f"  Greengrass configuration (agent component):  "
          f"{json.dumps({'trustedKeys': trusted_keys})}")
    print("  Lambda component:  EDGE_TRUSTED_KEYS=" + json.dumps(trusted_keys))
    print("(either form, or a path to either file, is read in every one of those places)")
    return 0


def package_model_main(args: argparse.Namespace) -> int:
    from agent.core.model_layout import artifact_dir_name, model_label, read_model_info
    from agent.device.platform.targets import parse_target
    from agent.tools.packaging.build import (
        build_onnx_package,
        build_package,
        build_packages,
        package_version,
        packaged_info,
    )

    if args.arch is not None and args.target is None:
        raise ConfigError("--arch needs --target")
    if args.backend == "onnx" and (args.target is not None or args.all):
        raise ConfigError("--backend onnx packages the ONNX model, for any target: drop "
                          f"{'--target' if args.target is not None else '--all'} (--all "
                          "already includes the ONNX package)")
    if args.backend == "dlr" and args.target is None and not args.all:
        raise ConfigError("say what to package: --target T, --all or --backend onnx")
    info = read_model_info(args.model_dir)
    version = package_version(args.model_dir, info, args.version)
    signer = signer_from_args(args)
    common: dict[str, Any] = {"signer": signer, "out_dir": args.out, "version": version,
                              "reference": args.reference, "golden_count": args.golden_count}
    if args.all:
        built = build_packages(args.model_dir, **common)
    elif args.backend == "onnx":
        built = [build_onnx_package(args.model_dir, **common)]
    else:
        target = parse_target(args.target).target
        arch = args.arch or target.arch
        built = [build_package(args.model_dir, artifact_dir_name(target.name, arch), **common)]
    relabelled = None
    if str(version) != info.version:
        label = model_label(packaged_info(info, version))
        relabelled = (f"{args.model_dir / 'model.json'} says version {info.version}: packaged "
                      f"as version {version}, label {label} (the packaged model.json says "
                      f"{version} too)")
    if args.json:
        print(json.dumps({"packages": [str(path) for path in built], "version": version,
                          **({"note": relabelled} if relabelled else {})}))
    else:
        if relabelled:
            print(relabelled)
        for path in built:
            print(path)
    return 0


def package_component_main(args: argparse.Namespace) -> int:
    from agent.tools.greengrass.component import ComponentOptions, build_components

    options = ComponentOptions(
        models=args.models, key=args.signing_key, key_id=args.key_id, out=args.out,
        model=args.model, model_versions=tuple(args.model_versions or ()),
        uri_base=args.uri_base,
        s3_packages=args.s3_packages, trust_signing_key=args.trust_signing_key,
        capture_bucket=args.capture_bucket, capture_prefix=args.capture_prefix,
        wheel=args.wheel, recipes=args.recipes, bucket=args.bucket, region=args.region,
        command=_component_command(args))
    log = (lambda _message: None) if args.json else print
    left_out: list[str] = []

    def warn(message: str) -> None:
        left_out.append(message)
        print(f"note: {message}", file=sys.stderr)

    written = build_components(options, log=log, warn=warn)
    if args.json:
        print(json.dumps({"out": str(args.out), "left_out": left_out, "components": [
            {"name": c.name, "folder": str(c.folder), "versions": list(c.versions),
             "platforms": list(c.platforms),
             "recipes": [str(p) for p in c.recipes],
             "artifacts": [str(p) for p in c.artifacts]} for c in written]}))
        return 0
    for c in written:
        print(f"{c.name} {', '.join(c.versions)}: {len(c.artifacts)} artifact(s) for "
              f"{', '.join(c.platforms)} in {c.folder}")
        for recipe in c.recipes:
            print(f"  {recipe}")
    merges = " ".join(f"--merge {c.name}={c.versions[-1]}" for c in written)
    local = args.out / "greengrass-local"
    print(f"publish: cd {args.out}/<component> && gdk component publish")
    print(f"deploy locally: sudo greengrass-cli deployment create --recipeDir {local}/recipes "
          f"--artifactDir {local}/artifacts {merges}")
    return 0


def _component_command(args: argparse.Namespace) -> tuple[str, ...]:
    """The command line that rebuilds these components (GDK's custom_build_command)."""
    command = ["edge-agent", "package", "component", "--models", str(args.models.resolve()),
               "--signing-key", str(args.signing_key.resolve()), "--key-id", args.key_id,
               "--out", str(args.out.resolve()), "--uri-base", args.uri_base,
               "--recipes", str(args.recipes.resolve()), "--bucket", args.bucket,
               "--region", args.region]
    if args.model is not None:
        command += ["--model", args.model]
    if args.model_versions:
        command += ["--model-version", *map(str, args.model_versions)]
    command += ["--s3-packages"] * args.s3_packages + \
        ["--trust-signing-key"] * args.trust_signing_key
    if args.capture_bucket is not None:
        command += ["--capture-bucket", args.capture_bucket,
                    "--capture-prefix", args.capture_prefix]
    if args.wheel is not None:
        command += ["--wheel", str(args.wheel.resolve())]
    return tuple(command)
