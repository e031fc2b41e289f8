"""Why ``edge-agent models import`` refused: every failure is found before anything is
written, and each message names the source or file and the field at fault. This is the
importer's branch; the whole tree is drawn in :mod:`agent.core.errors`::

    AgentError
    └── ModelImportError             an import that cannot be done; nothing was written
        ├── ImportSourceError        a source that is no directory, archive or .onnx file,
        │                            or an archive that is unsafe or broken
        ├── ImportLayoutError        files that are not one Neo artifact (no or two graphs,
        │                            params or compiled.meta that disagree with the graph)
        ├── ImportTargetError        an unknown target, or one the code or another says is wrong
        ├── ImportMetadataError      metadata flags or file that do not describe the model
        ├── ImportTestsetError       a test set that does not fit the model's inputs
        ├── ImportGoldenError        golden vectors that cannot be made or checked
        │   └── GoldenNotReproducedError
        │                            expected outputs the artifact does not reproduce
        └── ImportOutputError        the output directory exists (no --force) or cannot be written
"""

from __future__ import annotations

from agent.core.errors import AgentError


class ModelImportError(AgentError):
    """An import that cannot be done; nothing was written."""


class ImportSourceError(ModelImportError):
    """A source that cannot be opened: not a directory, ``.tar.gz``/``.tgz``, ``.zip`` or
    ``.onnx`` file, or an archive that escapes, links, is truncated or breaks a cap."""


class ImportLayoutError(ModelImportError):
    """The files of a source do not make one Neo artifact."""


class ImportTargetError(ModelImportError):
    """A target name that is unknown, or that the ELF code or another statement contradicts."""


class ImportMetadataError(ModelImportError):
    """Model metadata (flags or the ``--metadata`` file) that does not validate."""


class ImportTestsetError(ModelImportError):
    """A ``--testset`` file whose arrays do not fit the model's inputs."""


class ImportGoldenError(ModelImportError):
    """Golden vectors that cannot be computed or checked."""


class GoldenNotReproducedError(ImportGoldenError):
    """Expected outputs the imported artifact (or reference) does not reproduce."""


class ImportOutputError(ModelImportError):
    """The output directory exists and ``--force`` was not given, or it cannot be written."""
