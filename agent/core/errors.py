"""The agent's error hierarchy.

Every failure the agent reports is an :class:`AgentError`. Third-party and native
errors are translated where they enter (``raise ... from err``), so callers catch
these types and never a library's own::

    AgentError
    ├── ConfigError                  bad CLI option or configuration value
    ├── DeviceProfileError           the device's profile cannot be read or mapped
    ├── ArtifactError                a model artifact that cannot be used
    │   ├── ArtifactMissingError     a required file is absent
    │   ├── ArtifactCorruptError     a file is present but malformed
    │   ├── ArchitectureMismatchError  native code built for another machine
    │   └── TargetMismatchError      built for another Neo target than the device's
    ├── BackendError                 a runtime backend failed
    │   ├── BackendUnavailableError  the runtime library is not installed here
    │   ├── ModelLoadError           the runtime refused the artifact
    │   └── InferenceError           a run failed (e.g. a kernel returned an error)
    ├── InputSpecError               input of the wrong dtype or shape
    └── ModelBuildError              building a reference model failed
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(AgentError):
    """A configuration value or command-line option is invalid."""


class DeviceProfileError(AgentError):
    """The device profile cannot be read or mapped to a Neo target."""


class ArtifactError(AgentError):
    """A model artifact cannot be used."""


class ArtifactMissingError(ArtifactError):
    """A file the artifact needs is absent."""


class ArtifactCorruptError(ArtifactError):
    """A file of the artifact is present but malformed."""


class ArchitectureMismatchError(ArtifactError):
    """Native code in the artifact was built for another CPU architecture."""


class TargetMismatchError(ArtifactError):
    """The artifact was compiled for another Neo target than this device's."""


class BackendError(AgentError):
    """A runtime backend failed."""


class BackendUnavailableError(BackendError):
    """The runtime library the backend needs is not installed on this device."""


class ModelLoadError(BackendError):
    """The runtime refused to load the artifact."""


class InferenceError(BackendError):
    """A run of the model failed."""


class InputSpecError(AgentError):
    """An input does not match the model's dtype or shape."""


class ModelBuildError(AgentError):
    """Building a reference model failed."""
