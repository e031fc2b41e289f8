"""Capture: inputs of the inferences that matter kept on the device (rules tied to the
model's behaviour, a byte budget, a per-hour cap, crash-safe files), sealed into batches
and sent to S3 or a folder for retraining. Off by default.

Modules and their public names:

- ``config``: ``CaptureRules``, ``BatchConfig``, ``UploadConfig``, ``CaptureConfig``,
  ``RULE_NAMES`` (+1)
- ``errors``: ``CaptureError``, ``CaptureFormatError``, ``CaptureRulesError``,
  ``CaptureUploadError``
- ``record``: ``Capture``, ``encode``, ``decode``, ``from_meta``, ``new_capture_id`` (+2)
- ``scores``: ``score_setup``, ``top1_score``, ``scores_view``, ``view_top1``
- ``tap``: ``CaptureTap``, ``loop_frame_info``
- ``control``: ``CaptureControl``, ``RulesInForce``, ``config_digest``, ``refuse``,
  ``refuse_all``
- ``upload``: ``BatchUploader``, ``BatchStore``
- ``destinations``: ``Destination``, ``make_destination``, ``check_names``,
  ``check_thing``, ``clean_prefix``
- ``s3_destination``: ``S3Destination``, ``translate``
- ``folder_destination``: ``FolderDestination``
- ``throttle``: ``Throttle``
- ``store``: ``CaptureStore``, ``CaptureCounts``, ``BatchInfo``
- ``batches``: ``seal``, ``read_batch``, ``verify_batch``, ``BATCH_FILE``,
  ``MANIFEST_FILE`` (+5)
- ``store_files``: ``OpenCapture``, ``SealedBatch``, ``open_name``, ``drop_tree``,
  ``quarantine_into`` (+1)
- ``store_recovery``: ``recover``, ``Recovered``
- ``rate_cap``: ``HourlyCap``
- ``writer``: ``CaptureWriter``
"""
