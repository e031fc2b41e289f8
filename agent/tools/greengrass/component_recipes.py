"""The recipes ``edge-agent package component`` writes: the agent component's and the
model component's, filled in from the templates in ``recipes/`` for one version.

Each artifact entry carries its URI and its ``SHA-256`` digest. The URIs keep GDK's
placeholders ``s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/<file>`` (``gdk component
publish`` fills them in; a local ``greengrass-cli deployment create --recipeDir ...
--artifactDir ...`` takes the files by name), or use
``s3://bucket/prefix/<Component>/<version>/<file>``, or ``file://`` paths for the emulated
nucleus only (a real one downloads s3, greengrass and docker URIs).

The model component has one manifest per platform, each listing the signed packages of
the model's builds for it (x86_64 -> amd64, aarch64, armv7l -> arm; amd64 also carries the
x86_64 builds of the emulated boards) and ``testset.npz``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError
from agent.core.model_layout import TESTSET, list_artifacts, model_label, read_model_info
from agent.tools.greengrass.component_options import FILE_URIS, PLACEHOLDER_BASE, ComponentOptions
from agent.tools.greengrass.gdk import WHEEL_PREFIX
from agent.tools.greengrass.recipe_check import AGENT_COMPONENT, DIGEST_ALGORITHM, artifact_digest
from agent.wire.keys import public_key_b64, read_private_key
from agent.wire.signing import Signer

PLATFORM_OF_ARCH = {"x86_64": "amd64", "aarch64": "aarch64", "armv7l": "arm"}
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"


def copy_data(data: Any) -> dict[str, Any]:
    """A deep copy in which no two places share a value (YAML aliases become copies)."""
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


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


def agent_recipe(data: dict[str, Any], model_name: str, version: str, files: Path,
                 model_versions: list[int], options: ComponentOptions,
                 signer: Signer) -> dict[str, Any]:
    """The agent component's recipe ``version`` from its template ``data``: its artifacts
    the files built into ``files``, its model dependency admitting ``model_versions``,
    with the token exchange service and the trusted signing key when ``options`` ask."""
    recipe = copy_data(data)
    recipe["ComponentVersion"] = version
    dependencies = recipe["ComponentDependencies"]
    dependencies[model_name]["VersionRequirement"] = \
        f">={model_versions[0]}.0.0 <{model_versions[-1] + 1}.0.0"
    if options.s3_packages:
        dependencies[TOKEN_EXCHANGE] = {"VersionRequirement": ">=2.0.0 <3.0.0",
                                        "DependencyType": "HARD"}
    if options.trust_signing_key:
        configuration = recipe["ComponentConfiguration"]["DefaultConfiguration"]
        public = public_key_b64(read_private_key(options.key).public_key())
        configuration["trustedKeys"] = {**(configuration.get("trustedKeys") or {}),
                                        signer.key_id: public}
    built = {p.name: p for p in files.iterdir()}
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


def model_recipe(data: dict[str, Any], name: str, version: str, model_dir: Path,
                 files: Path, options: ComponentOptions) -> dict[str, Any]:
    """The model component's recipe ``version`` from its template ``data``: per platform
    manifest, the signed packages in ``files`` of ``model_dir``'s builds, and its test set."""
    recipe = copy_data(data)
    recipe["ComponentVersion"] = version
    by_platform: dict[str, list[tuple[bool, Path]]] = {}
    emulated = []
    for path, info in list_artifacts(model_dir):
        platform = PLATFORM_OF_ARCH.get(info.arch)
        if platform is None:
            raise ConfigError(f"{path}: no Greengrass platform for architecture {info.arch}")
        package = next(files.glob(f"*-{path.name}.tar.gz"))
        by_platform.setdefault(platform, []).append((info.emulated, package))
        if info.emulated:
            emulated.append(path.name)
    label = model_label(read_model_info(model_dir))
    recipe["ComponentDescription"] = (
        f"{label} compiled for each Neo target, as signed packages the edge inference agent "
        "installs as its first model. The amd64 manifest also carries the x86_64 builds of "
        f"emulated boards ({', '.join(emulated) or 'none'}), so a laptop emulating a board "
        "finds its package.")
    for manifest in recipe["Manifests"]:
        platform = manifest.get("Platform", {}).get("architecture")
        packages = by_platform.pop(platform, [])
        if not packages:
            raise ConfigError(f"{model_dir}: no {platform} artifacts (were the ARM cross "
                              "builds skipped? run `edge-agent models build` with the "
                              "cross compilers installed)")
        base = (manifest.get("Artifacts") or [{}])[0]  # Permission, as the template gives it
        manifest["Artifacts"] = [artifact_entry(base, p, name, version, options)
                                 for p in [*(p for _, p in sorted(packages)), files / TESTSET]]
    if by_platform:
        raise ConfigError(f"{name} template has no manifest for {', '.join(by_platform)}")
    return recipe
