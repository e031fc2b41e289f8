"""The recipes ``edge-agent package component`` writes: the agent component's and the
model component's, filled in from the templates in ``recipes/`` for one version.

The templates name no model: :data:`~agent.tools.greengrass.component_options.MODEL_SLOT`
stands for the model component, and :func:`fill_model_slot` writes the model's own name
over it (the agent's dependency and its ``--initial-package
{com.edgeinference.Model.<name>:artifacts:path}``). Both recipes keep only the manifests
of the platforms the model has builds for
(:attr:`~agent.tools.greengrass.component_models.ModelBuilds.platforms`), so they agree.

Each artifact entry carries its URI and its ``SHA-256`` digest. The URIs keep GDK's
placeholders ``s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/<file>`` (``gdk component
publish`` fills them in; a local ``greengrass-cli deployment create --recipeDir ...
--artifactDir ...`` takes the files by name), or use
``s3://bucket/prefix/<Component>/<version>/<file>``, or ``file://`` paths for the emulated
nucleus only (a real one downloads s3, greengrass and docker URIs).

The model component has one manifest per platform, each listing the signed packages of
the model's builds for it (amd64 also carries the x86_64 builds of the emulated boards),
the model's ONNX package on amd64 and aarch64 when it has one (where ONNX Runtime runs:
all of a manifest's artifacts land in the one folder the agent's ``--initial-package``
reads, and an agent running the onnx backend takes the ONNX package from it) and
``testset.npz`` when the model has one. The agent's recipe keeps the template's ``backend:
dlr`` unless only ONNX Runtime can run the model
(:attr:`~agent.tools.greengrass.component_models.ModelBuilds.backend`): then ``backend:
onnx``.

With ``--capture-bucket`` (:func:`s3_capture`) the agent's recipe turns capture on with
uploads to that S3 bucket and depends (HARD) on ``aws.greengrass.TokenExchangeService``, the
only way a component gets AWS credentials under Greengrass; without it (and without
``--s3-packages``) the recipe has no such dependency. The credentials are those of the
device's token exchange role (the IoT role alias's, e.g. ``GreengrassV2TokenExchangeRole``),
which must allow what the uploader calls, and no more: ``recipes/iot/capture-upload-policy.json``
(fill in ``BUCKET`` and ``PREFIX``). ``s3:PutObject`` sends a batch's files; ``s3:GetObject``
asks whether a batch's ``batch.json`` already arrived (after a kill between the last upload
and the local delete); ``s3:ListBucket`` on the bucket makes S3 answer that question with
404 for a batch not there yet rather than 403, which the uploader could not tell from a
refusal. Objects are granted under ``PREFIX/${credentials-iot:ThingName}/``, so a device
writes and reads only its own folder (the IoT credentials provider fills in the thing name
that Greengrass sends). A bucket encrypted with a KMS key also needs ``kms:GenerateDataKey``
and ``kms:Decrypt`` on that key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.core.errors import ConfigError
from agent.core.model_layout import TESTSET, model_label
from agent.device.capture.config import UploadConfig
from agent.tools.greengrass.agent_rules import TOKEN_EXCHANGE
from agent.tools.greengrass.component_models import ModelBuilds, VersionBuilds
from agent.tools.greengrass.component_options import (
    FILE_URIS,
    MODEL_SLOT,
    PLACEHOLDER_BASE,
    ComponentOptions,
)
from agent.tools.greengrass.gdk import WHEEL_PREFIX
from agent.tools.greengrass.recipe_check import AGENT_COMPONENT, DIGEST_ALGORITHM, artifact_digest
from agent.wire.keys import public_key_b64, read_private_key
from agent.wire.signing import Signer

TOKEN_EXCHANGE_DEPENDENCY = {"VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"}
DLR_COMPONENT = "variant.DLR"  # libdlr for ARM boards, a dependency of DLR-backend agents


def copy_data(data: Any) -> dict[str, Any]:
    """A deep copy in which no two places share a value (YAML aliases become copies)."""
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


def fill_model_slot(data: Any, component: str) -> Any:
    """``data`` with the model component ``component`` written over every
    :data:`~agent.tools.greengrass.component_options.MODEL_SLOT`, in keys and values."""
    if isinstance(data, str):
        return data.replace(MODEL_SLOT, component)
    if isinstance(data, dict):
        return {fill_model_slot(k, component): fill_model_slot(v, component)
                for k, v in data.items()}
    if isinstance(data, list):
        return [fill_model_slot(v, component) for v in data]
    return data


def platform_manifests(recipe: dict[str, Any], platforms: tuple[str, ...],
                       template: str) -> list[dict[str, Any]]:
    """The manifests of ``recipe`` for ``platforms`` (Greengrass architectures), in the
    template's order; ConfigError when ``template`` has none for one of them."""
    manifests = recipe.get("Manifests") or []
    kept = [m for m in manifests if m.get("Platform", {}).get("architecture") in platforms]
    missing = [p for p in platforms
               if not any(m["Platform"]["architecture"] == p for m in kept)]
    if missing:
        raise ConfigError(f"recipe template {template}: no manifest for "
                          f"{', '.join(f'linux/{p}' for p in missing)}")
    return kept


def artifact_entry(base: Mapping[str, Any], path: Path, name: str, version: str,
                   options: ComponentOptions) -> dict[str, Any]:
    """The recipe entry of the staged artifact ``path`` of component ``name`` ``version``:
    ``base``'s other keys (Permission...) with the URI ``options.uri_base`` gives and the
    file's digest."""
    if options.uri_base == FILE_URIS:  # where the file will be once moved into place
        uri = (options.out.resolve() / path.relative_to(path.parents[5])).as_uri()
    elif options.uri_base == PLACEHOLDER_BASE:
        uri = f"{PLACEHOLDER_BASE}/{path.name}"
    else:
        uri = f"{options.uri_base.rstrip('/')}/{name}/{version}/{path.name}"
    kept = {k: v for k, v in base.items() if k not in ("URI", "Digest", "Algorithm")}
    return {"URI": uri, **kept, "Digest": artifact_digest(path), "Algorithm": DIGEST_ALGORITHM}


def agent_recipe(data: dict[str, Any], model: ModelBuilds, version: str, files: Path,
                 options: ComponentOptions, signer: Signer) -> dict[str, Any]:
    """The agent component's recipe ``version`` from its template ``data``: its artifacts
    the files built into ``files``, its manifests those of ``model``'s platforms, its model
    dependency ``model``'s component admitting its versions, with the token exchange
    service, capture uploads to S3 (:func:`s3_capture`) and the trusted signing key when
    ``options`` ask."""
    recipe: dict[str, Any] = fill_model_slot(copy_data(data), model.component)
    recipe["ComponentVersion"] = version
    dependencies = recipe["ComponentDependencies"]
    numbers = [v.number for v in model.versions]
    dependencies[model.component]["VersionRequirement"] = \
        f">={numbers[0]}.0.0 <{numbers[-1] + 1}.0.0"
    if options.s3_packages:
        dependencies[TOKEN_EXCHANGE] = dict(TOKEN_EXCHANGE_DEPENDENCY)
    if options.capture_bucket is not None:
        s3_capture(recipe, bucket=options.capture_bucket, prefix=options.capture_prefix)
    configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    if model.backend == "onnx":
        configuration["backend"] = "onnx"  # AgentConfig reads a bare name as its defaults
        # libdlr serves only Neo artifacts, and this model has none a device could use.
        dependencies.pop(DLR_COMPONENT, None)
    if options.trust_signing_key:
        public = public_key_b64(read_private_key(options.key).public_key())
        configuration["trustedKeys"] = {**(configuration.get("trustedKeys") or {}),
                                        signer.key_id: public}
    built = {p.name: p for p in files.iterdir()}
    recipe["Manifests"] = platform_manifests(recipe, model.platforms, AGENT_COMPONENT)
    for manifest in recipe["Manifests"]:
        entries = []
        for artifact in manifest.get("Artifacts", []):
            file_name = artifact["URI"].rsplit("/", 1)[-1]
            if file_name.endswith(".whl") and file_name.startswith(WHEEL_PREFIX):
                file_name = next(n for n in built if n.endswith(".whl"))
            if file_name not in built:
                raise ConfigError(f"{AGENT_COMPONENT} template names {file_name}, which the "
                                  f"build does not make (it makes {', '.join(sorted(built))})")
            entries.append(artifact_entry(artifact, built[file_name], AGENT_COMPONENT, version,
                                          options))
        manifest["Artifacts"] = entries
    return recipe


def s3_capture(recipe: dict[str, Any], *, bucket: str, prefix: str = "captures"
               ) -> dict[str, Any]:
    """The agent recipe ``recipe`` (its data, changed in place and returned) with capture
    on, uploading its batches to the S3 ``bucket`` under ``prefix``, and a HARD dependency on
    the token exchange service: under Greengrass that is where the agent's boto3 client gets
    its credentials (the device's token exchange role, which must allow the calls
    :mod:`agent.device.capture.s3_destination` makes). The rules, budget and caps stay the
    template's; a deployment may merge others."""
    try:
        UploadConfig(kind="s3", bucket=bucket, prefix=prefix)
    except ValidationError as err:
        problem = err.errors()[0]
        raise ConfigError(f"capture upload to s3://{bucket}/{prefix}: "
                          f"{problem['msg']}") from err
    configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    capture = configuration.setdefault("capture", {})
    capture["enabled"] = True
    capture.setdefault("upload", {}).update({"kind": "s3", "bucket": bucket, "prefix": prefix})
    recipe.setdefault("ComponentDependencies", {})[TOKEN_EXCHANGE] = \
        dict(TOKEN_EXCHANGE_DEPENDENCY)
    return recipe


def model_recipe(data: dict[str, Any], model: ModelBuilds, builds: VersionBuilds,
                 version: str, packages: dict[Path, Path], files: Path,
                 options: ComponentOptions, *, onnx_package: Path | None = None
                 ) -> dict[str, Any]:
    """The model component's recipe ``version`` from its template ``data``: per platform
    of ``model``, the signed packages (``packages``: artifact directory -> its package in
    ``files``) of that platform's builds in ``builds``, ``onnx_package`` on the platforms
    of :attr:`~agent.tools.greengrass.component_models.VersionBuilds.onnx_platforms`, and
    the model's test set if any."""
    recipe: dict[str, Any] = fill_model_slot(copy_data(data), model.component)
    recipe["ComponentName"] = model.component
    recipe["ComponentVersion"] = version
    recipe["ComponentDescription"] = _description(builds)
    recipe["Manifests"] = platform_manifests(recipe, model.platforms, model.component)
    extra = [files / TESTSET] if (files / TESTSET).is_file() else []
    for manifest in recipe["Manifests"]:
        platform = manifest["Platform"]["architecture"]
        base = (manifest.get("Artifacts") or [{}])[0]  # Permission, as the template gives it
        onnx = [onnx_package] if onnx_package and platform in builds.onnx_platforms else []
        manifest["Artifacts"] = [
            artifact_entry(base, path, model.component, version, options)
            for path in [*(packages[d] for d, _ in builds.by_platform[platform]), *onnx,
                         *extra]]
    return recipe


def _description(builds: VersionBuilds) -> str:
    info = builds.info
    about = info.metadata.description if info.metadata is not None else None
    targets = sorted({a.target for _, a in builds.builds if not a.emulated})
    emulated = sorted(d.name for d, a in builds.builds if a.emulated)
    made = [f"compiled for {', '.join(targets)}"] if targets else []
    if builds.onnx_platforms:
        made.append("exported to ONNX (for agents running the onnx backend, on "
                    f"{', '.join(builds.onnx_platforms)})")
    text = (f"{model_label(info)}{f' ({about})' if about else ''} {' and '.join(made)}, as "
            "signed packages the edge inference agent installs as its first model.")
    if emulated:
        text += (" The amd64 manifest also carries the x86_64 builds of emulated boards "
                 f"({', '.join(emulated)}), so a laptop emulating a board finds its package.")
    return text
