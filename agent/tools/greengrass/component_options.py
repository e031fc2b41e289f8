"""What ``edge-agent package component`` is asked to build: :class:`ComponentOptions`, and
the defaults and artifact URI styles it is given in, and how the templates in ``recipes/``
stand for the model component (:data:`MODEL_SLOT`, written over with the model's own).

Shared by :mod:`~agent.tools.greengrass.component` (which builds the components) and
:mod:`~agent.tools.greengrass.component_recipes` (which fills in their recipes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PLACEHOLDER_BASE = "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION"  # GDK's placeholders
FILE_URIS = "file"  # file:// URIs, for the emulated nucleus only
DEFAULT_RECIPES = Path(__file__).resolve().parents[3] / "recipes"
MODEL_PREFIX = "com.edgeinference.Model."  # + the model's name: its component
# The templates name no model: this stands for the model component being built.
MODEL_SLOT = MODEL_PREFIX + "MODEL_NAME"
MODEL_TEMPLATE = "com.edgeinference.Model.yaml"


@dataclass(frozen=True, kw_only=True)
class ComponentOptions:
    """What ``edge-agent package component`` builds, and from what."""

    models: Path  # built model directories (digits-v1, digits-v2, ...), or one of them
    key: Path  # the package-signing private key
    key_id: str
    out: Path
    model: str | None = None  # the model's name; None = the only one in ``models``
    model_versions: tuple[int, ...] = ()  # () = every version found in ``models``
    uri_base: str = PLACEHOLDER_BASE  # s3://bucket/prefix, or "file"
    s3_packages: bool = False  # the agent fetches s3:// packages itself: needs TES
    trust_signing_key: bool = False  # add the signing key to the agent's trustedKeys
    # Capture on, uploading to this S3 bucket under capture_prefix: needs TES.
    capture_bucket: str | None = None
    capture_prefix: str = "captures"
    wheel: Path | None = None  # a built agent wheel; default: build one from the source
    recipes: Path = DEFAULT_RECIPES
    bucket: str = "edge-inference-components"  # gdk-config publish.bucket
    region: str = "us-east-1"  # gdk-config publish.region
    command: tuple[str, ...] = ()  # the command line that reproduces this build (GDK build)
