"""Capture: inputs of the inferences that matter kept on the device (rules tied to the
model's behaviour, a byte budget, a per-hour cap, crash-safe files), sealed into batches
and sent to S3 or a folder for retraining. Off by default.

Modules and their public names:

- ``config``: ``CaptureRules``, ``BatchConfig``, ``UploadConfig``, ``CaptureConfig``,
  ``RULE_NAMES`` (+1)
- ``errors``: ``CaptureError``, ``CaptureFormatError``, ``CaptureRulesError``,
  ``CaptureUploadError``
- ``record``: ``Capture``, ``encode``, ``decode``, ``from_meta``, ``new_capture_id`` (+2)
"""
