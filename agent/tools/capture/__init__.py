"""Retraining from field captures: pull uploaded batches into a dataset, label, export.

``edge-agent capture pull|list|label|export`` (:mod:`agent.cli.capture`) runs these; the
same steps are callable from Python: :func:`~agent.tools.capture.pull.pull_captures`,
:func:`~agent.tools.capture.labels.apply_labels`,
:func:`~agent.tools.capture.export.export_dataset`.

Modules and their public names:

- ``dataset``: ``CaptureDataset``, ``DatasetCounts``, ``INDEX_FILE``, ``BATCHES_FILE``,
  ``CAPTURES_DIR`` (+4)
- ``errors``: ``CaptureDatasetError``, ``CaptureSourceError``, ``CaptureLabelError``,
  ``CaptureExportError``
- ``export``: ``ExportResult``, ``export_dataset``, ``TRAIN_FILE``
- ``fetch``: ``FetchedBatch``, ``fetch_batch``, ``manifest_lines`` (+3)
- ``labels``: ``LabelResult``, ``apply_labels``, ``read_label_csv``, ``check_label``,
  ``HEADER``
- ``pull``: ``PullSummary``, ``RefusedBatch``, ``pull_captures``
- ``remote``: ``RemoteBatch``, ``BatchSource``, ``FolderSource``, ``S3Source``,
  ``open_source`` (+3)
"""
