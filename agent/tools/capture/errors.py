"""Why a capture dataset command refused: a pull source that cannot be read, a dataset
folder that is not one, a label file or label that does not fit, captures that cannot
be exported. This is the training side's branch; the whole tree is drawn in
:mod:`agent.core.errors`::

    CaptureError
    └── CaptureDatasetError          a capture dataset that cannot be read, changed or exported
        ├── CaptureSourceError       a pull source that cannot be listed or read (no bucket,
        │                            wrong credentials, no such folder)
        ├── CaptureLabelError        a label file or label that does not fit (names the line);
        │                            nothing was changed
        └── CaptureExportError       captures that cannot be exported (no labelled capture, a
                                     label that is not an integer, inputs of another shape)

A corrupt remote batch is no error of the pull: it is refused (a
:class:`~agent.device.capture.errors.CaptureFormatError` naming what is wrong, counted in
the summary) and the pull goes on with the other batches.
"""

from __future__ import annotations

from agent.device.capture.errors import CaptureError


class CaptureDatasetError(CaptureError):
    """A capture dataset folder that cannot be read, changed or exported."""


class CaptureSourceError(CaptureDatasetError):
    """A pull source (``s3://bucket/prefix`` or a folder) that cannot be listed or read."""


class CaptureLabelError(CaptureDatasetError):
    """A label file or label that does not fit the dataset; nothing was changed."""


class CaptureExportError(CaptureDatasetError):
    """Captures that cannot be exported as a training channel."""
