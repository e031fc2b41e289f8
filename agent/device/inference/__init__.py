"""The inference path: loop, lanes, sources, pacing, shared memory, plans, router, and a
user's input turned into tensors and its scores into named classes.

Modules and their public names:

- ``capture_hooks``: ``CaptureHooks``, ``CaptureAsk``
- ``frames``: ``FramePreprocessor``, ``image_preprocessor``
- ``guardrails``: ``Guardrails``, ``Breach``, ``evaluate``
- ``image_source``: ``ImageSource``, ``list_images``
- ``inputs``: ``read_inputs``, ``match_inputs``, ``fit_input``, ``fit_samples``,
  ``describe_spec``
- ``lane``: ``LoopStats``, ``Lane``
- ``pacing``: ``Pacer``
- ``plans``: ``Plan``, ``ShadowStats``, ``serve``, ``shadow``, ``weighted``
- ``postprocess``: ``Prediction``, ``top_k``, ``softmax``, ``predictions``,
  ``scores_output`` (+2)
- ``preprocess``: ``decode_image``, ``image_to_tensor``, ``resize_image``, ``input_size``
- ``router``: ``VariantError``, ``Role``, ``LaneReport``, ``RouterSnapshot``,
  ``VariantRouter``
- ``runner``: ``InferenceLoop``, ``Lane``, ``LoopStats``
- ``shm``: ``ShmRing``, ``ShmSource``, ``ring_name``
- ``shm_producer``: ``main``
- ``request_plans``: ``RequestPlan``, ``serve``, ``weighted``, ``shadow``, ``ShadowWorker``
- ``requests``: ``InferenceRequest``, ``RequestStats``, ``RequestQueue``
- ``sources``: ``Source``, ``ReplaySource``, ``MultiReplaySource``, ``ApiSource``,
  ``RandomSource``,
  ``EvaluationSet``, ``read_testset``, ``load_testset``, ``choose_source``,
  ``make_source_factory``, ``SourceOptions``
- ``video_source``: ``VideoInput``, ``VideoSource``, ``video_input``, ``open_video``
"""
