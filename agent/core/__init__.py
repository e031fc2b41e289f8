"""Shared vocabulary under every other floor: errors, model layout, histogram, durable writes.

Modules and their public names:

- ``crash``: ``parse_crash_spec``, ``crash_point``
- ``durable``: ``temp_path``, ``write_chunk``, ``fsync_dir``, ``atomic_write``,
  ``atomic_write_text`` (+3)
- ``errors``: ``AgentError``, ``ConfigError``, ``DeviceProfileError``, ``ArtifactError``,
  ``ArtifactMissingError`` (+9)
- ``histogram``: ``LatencyHistogram``, ``edges_for``, ``quantile_us``, ``diff_counts``,
  ``merge_counts`` (+3)
- ``model_layout``: ``TensorSpec``, ``ModelInfo``, ``ArtifactInfo``, ``as_dtype``,
  ``model_label`` (+5)
- ``model_metadata``: ``ModelMetadata``, ``Preprocess``, ``Postprocess``, ``metadata_problem``,
  ``class_count`` (+1)
"""
