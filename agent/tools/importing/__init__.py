"""Importing a user's own model: SageMaker Neo, TVM or ONNX outputs into a model directory.

``edge-agent models import SOURCE... --out DIR`` (:mod:`agent.cli.models`) runs
:func:`~agent.tools.importing.importer.import_model`; the result is a model directory in
the layout of :mod:`agent.core.model_layout`, ready for ``package model``.

Modules and their public names:

- ``arrays``: ``read_npz``, ``npz_bytes``, ``write_npz``, ``cases_by_tensor``, ``as_cases``,
  ``case_count`` (+2)
- ``errors``: ``ModelImportError``, ``ImportSourceError``, ``ImportLayoutError``,
  ``ImportTargetError``, ``ImportMetadataError`` (+4)
- ``golden``: ``GoldenOptions``, ``Reference``, ``GoldenCases``, ``check_options``,
  ``make_golden`` (+1)
- ``importer``: ``ImportRequest``, ``import_model``
- ``metadata_file``: ``MetadataOptions``, ``ResolvedMetadata``, ``MetadataFile``,
  ``resolve_metadata``, ``read_labels``
- ``neo_files``: ``NeoFiles``, ``find_neo_files``, ``claimed_target``
- ``reference_run``: ``run_reference``, ``reference_outputs``, ``main``
- ``report``: ``ImportedArtifact``, ``ImportResult``
- ``sources``: ``SourceSpec``, ``OpenedSource``, ``parse_source``, ``open_source``,
  ``content_root``
- ``specs``: ``Specs``, ``artifact_specs``, ``onnx_specs``, ``check_same_specs``,
  ``describe``
- ``targets``: ``Claim``, ``ResolvedTarget``, ``parse_named``, ``check_jetpack``,
  ``resolve_target`` (+1)
- ``testset``: ``Testset``, ``read_testset``
"""
