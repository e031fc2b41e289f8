"""The agent's error hierarchy: the whole tree, every error class of the package.

Every failure the agent reports is an :class:`AgentError`. Third-party and native
errors are translated where they enter (``raise ... from err``), so callers catch
these types and never a library's own.

Where a class is defined: a bracket names its module (relative to the ``agent``
package); a class without one is defined where its nearest bracketed ancestor is, or
in this module when no ancestor has a bracket. A class with two parents is drawn under
its first, and its meaning names the other ("also ..."), which catches it as well.
Modules that define a branch of errors (:mod:`agent.wire.errors`,
:mod:`agent.device.packages.errors`, :mod:`agent.device.store.errors`,
:mod:`agent.device.capture.errors`,
:mod:`agent.controller.errors`, :mod:`agent.tools.nucleus.errors`,
:mod:`agent.tools.importing.errors`, :mod:`agent.tools.capture.errors`) describe theirs in
more detail and point back here. ``tests/unit/core/test_errors.py`` checks this drawing
against the classes themselves, so it cannot fall behind::

    AgentError                                  every failure the agent reports on purpose
    ├── ConfigError                             bad CLI option or configuration value
    │   ├── KeyFormatError [wire.errors]        a key file or string that is not an Ed25519 key
    │   ├── StateFileError [wire.errors]        a state file (sequence, replay marks) unusable
    │   └── SourceError                         a loop source that cannot open: path, video, ring
    ├── DeviceProfileError                      the device's profile cannot be read or mapped
    ├── ArtifactError                           a model artifact that cannot be used
    │   ├── ArtifactMissingError                a required file is absent
    │   ├── ArtifactCorruptError                a file is present but malformed
    │   ├── ArchitectureMismatchError           native code built for another machine
    │   └── TargetMismatchError                 built for another Neo target than the device's
    ├── BackendError                            a runtime backend failed
    │   ├── BackendUnavailableError             the runtime library is not installed here
    │   ├── ModelLoadError                      the runtime refused the artifact
    │   └── InferenceError                      a run failed (e.g. a kernel returned an error)
    ├── InputSpecError                          input of the wrong dtype or shape
    │   └── EventError [device.lambda_function.batches]
    │       │                                   a Lambda event the handler does not understand
    │       └── TooManyRowsError                more rows than one invocation accepts
    ├── ModelBuildError                         building a reference model failed
    ├── ServingError                            the local inference API refused a request
    │   ├── ServerBusyError                     the model's queue is full: retry later (HTTP 503)
    │   ├── DeadlineExceededError               no answer within the request's deadline
    │   ├── ModelNotFoundError                  no model of that name (or version) is served
    │   ├── RequestFormatError                  a body, header or parameter that is malformed
    │   │   └── RequestTooLargeError            a body over the server's size limit
    │   ├── RegionError                         a shared-memory region unknown, too small, gone
    │   └── ServerUnavailableError              the server's socket cannot be reached, or closed
    ├── RingError                               a shared-memory frame ring a producer cannot use
    │   ├── RingClosedError                     the agent closed the ring: attach again when back
    │   ├── RingFullError                       no free slot in time: the agent is behind
    │   ├── RingFrameError                      a frame or header breaking the ring's layout
    │   └── ResultRingError                     a shared-memory result ring unusable: gone, not one
    ├── ModelImportError [tools.importing.errors]
    │   │                                       ``models import`` refused; nothing was written
    │   ├── ImportSourceError                   not a dir/.tar.gz/.zip/.onnx, or an unsafe archive
    │   ├── ImportLayoutError                   not one Neo artifact: no or two graphs, bad params
    │   ├── ImportTargetError                   unknown target, or one the code contradicts
    │   ├── ImportMetadataError                 metadata flags or file that do not fit the model
    │   ├── ImportTestsetError                  a test set that does not fit the model's inputs
    │   ├── ImportGoldenError                   golden vectors that cannot be made or checked
    │   │   └── GoldenNotReproducedError        expected outputs the artifact does not reproduce
    │   └── ImportOutputError                   --out exists (no --force) or cannot be written
    ├── ProtocolError [wire.errors]             a message that is refused and changes nothing
    │   ├── DecodeError                         bytes that are not a valid message
    │   │   ├── MalformedMessageError           not UTF-8, not JSON, or not a JSON object
    │   │   ├── OversizedMessageError           over AWS IoT Core's 128 KB payload limit
    │   │   ├── UnsupportedVersionError         a schema version ``v`` this agent does not speak
    │   │   └── SchemaError                     JSON that does not fit the schema (names the field)
    │   ├── SignatureError                      a command the device must not trust
    │   │   ├── MissingSignatureError           no ``key_id`` or no ``signature``
    │   │   ├── UnknownKeyError                 signed by a key the trust store does not hold
    │   │   ├── RevokedKeyError                 signed by a revoked key
    │   │   └── BadSignatureError               forged, or edited after signing
    │   ├── WrongTargetError                    for another thing, or a group this device is not in
    │   ├── ReplayError                         a message or command id seen before (re-ack only)
    │   └── StaleCommandError                   a rollout_seq at or below the highest applied
    ├── TransportError [wire.transport]         a transport could not connect, publish or subscribe
    │   └── TransportConfigError                misconfigured (certificate, option): no retry helps
    ├── PackageError [device.packages.errors]   a model package that must not be installed
    │   ├── PackageFormatError                  no or malformed manifest.json, or not a tar.gz
    │   │   ├── TruncatedArchiveError           the archive ends early (cut download, short file)
    │   │   └── ModelInfoMismatchError          model.json disagrees with the signed manifest
    │   ├── PackageSignatureError               an untrusted manifest; also a SignatureError
    │   │   ├── UnsignedPackageError            no key_id or signature; also MissingSignatureError
    │   │   ├── UnknownPackageKeyError          signed by an untrusted key; also UnknownKeyError
    │   │   ├── RevokedPackageKeyError          signed by a revoked key; also RevokedKeyError
    │   │   └── BadPackageSignatureError        forged or edited; also BadSignatureError
    │   ├── VersionBelowFloorError              older than the anti-rollback floor
    │   ├── DigestMismatchError                 content differs from what was signed
    │   │   ├── MissingFileError                a file the manifest lists is not in the archive
    │   │   └── UnlistedFileError               a file in the archive the manifest does not list
    │   ├── UnsafeArchiveError                  a member that escapes, links, or breaks a limit
    │   │   └── ArchiveLimitError               past a named PackageLimits limit (limit, value)
    │   ├── FetchError                          the download failed (status, connection, retries)
    │   │   ├── PackageTooLargeError            the download passed the size cap (stopped there)
    │   │   ├── FetchLimitError                 past the fetch deadline or under its minimum rate
    │   │   ├── FetchCancelledError             cancelled by a newer stage or its rollback
    │   │   ├── PackageSourceNotAllowedError    a local path outside the package folders
    │   │   └── S3UnavailableError              s3:// needs boto3; also BackendUnavailableError
    │   ├── StagingIOError                      the staging area could not be written (EACCES, EIO)
    │   │   └── DiskFullError                   no space left (ENOSPC, quota, file-size limit)
    │   └── GoldenError                         the golden vectors were not reproduced here
    │       ├── GoldenMismatchError             outputs differ beyond the manifest's tolerance
    │       ├── GoldenRuntimeError              the runtime refused the model or a run failed
    │       │   └── TensorSpecMismatchError     the artifact's tensors are not the manifest's
    │       ├── GoldenCrashError                the check process died of a signal (signal_name)
    │       └── GoldenTimeoutError              the check did not finish in time and was killed
    ├── StoreError [device.store.errors]        the model store refused; nothing changed on disk
    │   ├── StoreLockedError                    another process holds the store's lock
    │   ├── StoreCorruptError                   a store file that is unreadable or malformed
    │   ├── StoreIOError                        reading or writing the store failed (EIO, ENOSPC)
    │   ├── InvalidVersionIdError               a version id that is not a safe directory name
    │   ├── VersionExistsError                  a version of that id is already stored
    │   ├── UnknownVersionError                 no complete version of that id in the store
    │   ├── TrialPendingError                   a trial is running: confirm or roll it back first
    │   ├── NoTrialError                        no trial is running to confirm or roll back
    │   └── RollbackUnavailableError            no previous version to roll back to
    ├── VariantError [device.inference.router]  a variant change that does not fit the state
    │   └── InsufficientMemoryError [device.app.swaps]
    │                                           no room for the candidate beside the serving model
    ├── SpoolError [device.uplink.spool_types]  the uplink spool database cannot be read or written
    │   └── SpoolFullError                      no space for the spool (disk full, page cap reached)
    ├── CaptureError [device.capture.errors]    a capture that cannot be stored, read or sent
    │   ├── CaptureFormatError                  a capture file or batch not what it claims
    │   ├── CaptureRulesError                   capture rules malformed or over the device's caps
    │   ├── CaptureUploadError                  a destination refused or could not take a batch
    │   └── CaptureDatasetError [tools.capture.errors]
    │       │                                   a capture dataset unusable: folder, labels, export
    │       ├── CaptureSourceError              a pull source that cannot be listed or read
    │       ├── CaptureLabelError               a label file or label that does not fit (names line)
    │       └── CaptureExportError              captures that cannot be exported as a channel
    ├── FleetError [controller.errors]          the fleet controller refused or failed something
    │   ├── SpecError                           a rollout spec that does not validate (names field)
    │   ├── FleetFileError                      a fleet (groups) file that cannot be read or parsed
    │   ├── PlanError                           a spec and a fleet that cannot be planned together
    │   │   └── OverlapError                    its devices are in another unfinished rollout
    │   ├── RolloutExistsError                  a rollout of that name exists already
    │   ├── FleetStateError                     the controller's SQLite state is unusable
    │   │   └── DecisionConflictError           a second, different decision for a device's step
    │   ├── ReportRejectedError                 a device report refused at ingest (names reason)
    │   └── SimulationError [tools.fleet_sim.model]
    │                                           a simulated fleet set up wrongly, or cut off
    ├── S3ServerError [tools.s3.local_server]   the loopback S3 server could not be started
    ├── NucleusError [tools.nucleus.errors]     the emulated nucleus cannot start or do as asked
    │   ├── FramingError                        IPC socket bytes that are no event-stream message
    │   ├── IpcServiceError                     an operation answered with a Greengrass error shape
    │   └── DeploymentError [tools.nucleus.components]
    │       │                                   a deployment that cannot go on (names the component)
    │       ├── DependencyError                 unknown dependency, requirement not met, cycle
    │       ├── PlatformError                   no manifest of the recipe fits this platform
    │       ├── ComponentArtifactError          an artifact missing, not matching its digest, unsafe
    │       └── LifecycleError                  a lifecycle step failed or timed out (log_path)
    ├── RecipeError [tools.greengrass.recipe]   a component recipe that cannot be loaded
    │   └── UnresolvedVariableError [tools.nucleus.strict_variables]
    │                                           a recipe variable the emulated nucleus cannot fill
    ├── RecipeCheckError [tools.greengrass.recipe_check]
    │                                           a recipe that failed check_recipe (see problems)
    ├── AccessDeniedError [tools.greengrass.access_policy]
    │                                           no accessControl policy grants the operation
    ├── BrokerError [tools.brokers]             a local MQTT broker could not be started or stopped
    │   └── BrokerMissingError                  the broker program (e.g. mosquitto) is not installed
    ├── VerificationError [tools.bench.loop]    a benchmarked loop gave wrong classes: no timing
    └── DemoTimeoutError [tools.demo.fleet_rollouts]
                                                something a demo waits for did not happen in time
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


class ServingError(AgentError):
    """The local inference API refused a request; nothing ran."""


class ServerBusyError(ServingError):
    """The model's request queue is full: the client should retry later."""


class DeadlineExceededError(ServingError):
    """No answer within the request's deadline (it never ran, or its answer came too late)."""


class ModelNotFoundError(ServingError):
    """No model of that name (or version) is served here."""


class RequestFormatError(ServingError):
    """A request body, header or parameter that is malformed."""


class RequestTooLargeError(RequestFormatError):
    """A request body over the server's size limit."""


class RegionError(ServingError):
    """A shared-memory region that is not registered, too small, or cannot be mapped."""


class ServerUnavailableError(ServingError):
    """The server's socket cannot be reached, or it closed the connection (a client's
    view: connecting again may help once the agent runs)."""


class SourceError(ConfigError):
    """A loop source that cannot be opened: no such path, a glob matching nothing, a video
    that cannot be decoded, a shared-memory name taken by something else."""


class RingError(AgentError):
    """A shared-memory frame ring that cannot be created, attached or written."""


class RingClosedError(RingError):
    """The agent closed the ring (it stopped or restarted): attach again."""


class RingFullError(RingError):
    """No free slot within the wait: the agent reads frames slower than they come."""


class RingFrameError(RingError):
    """A frame the agent refused to run: a ring header rewritten (magic, slots, sizes, an
    input's shape), a slot whose sequence number is not the next one, or a write position
    that goes backwards or past the slots. The agent counts it and serves on."""


class ResultRingError(RingError):
    """A shared-memory result ring that cannot be created or read: no ring of that name,
    not a result ring, or one held by another running agent."""
