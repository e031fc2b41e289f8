"""The fleet rollout controller (cloud side, never on a device): specs to decisions.

Pure logic and durable state, no transport: :mod:`.spec` (rollout specs),
:mod:`.registry` (devices and groups), :mod:`.plan` (deterministic cohorts and
per-device commands), :mod:`.guardrails` (fleet verdicts from merged
histograms), :mod:`.state` (SQLite state a restarted controller resumes from).

Modules and their public names:

- ``controller``: ``ANNOUNCE_ROLLOUT``, ``ASK_AGAIN_S``, ``DEVICE_BREACHES``,
  ``KEEP_FINISHED``, ``TERMINAL`` (+2)
- ``breach_quorum``: ``quorum``, ``split_breaches``, ``describe_event``, ``rollback_reason``,
  ``held_reason`` (+5)
- ``discovery``: ``Discovery``
- ``errors``: ``FleetError``, ``SpecError``, ``FleetFileError``, ``PlanError``,
  ``OverlapError`` (+4)
- ``guardrails``: ``Breach``, ``ScopeFigures``, ``Verdict``, ``counted_reports``,
  ``evaluate``
- ``ingest_limits``: ``IngestLimits``, ``TokenBuckets``, ``Rejections``, ``REJECT_BAD_TOPIC``,
  ``REJECT_RATE_LIMITED`` (+6)
- ``lock``: ``ControllerLock``
- ``operator_requests``: ``act_on``
- ``plan``: ``PlannedCommand``, ``Step``, ``seq_base``, ``command_seq``, ``step_of_seq``
  (+5)
- ``progress``: ``step_name``, ``step_count``, ``progress_line``, ``final_summary``,
  ``status_lines``
- ``registry``: ``Device``, ``FleetRegistry``, ``neo_target_class``, ``load_fleet_file``,
  ``ONNX_PACKAGE``
- ``report``: ``StepSpan``, ``plain``, ``rollout_json``, ``rollout_end``, ``step_spans``
  (+4)
- ``report_checks``: ``MetricsHistory``, ``MAX_COUNT``, ``COUNT_OUT_OF_RANGE``,
  ``COUNTS_DECREASED``, ``TOTALS_DECREASED`` (+4)
- ``runner``: ``RunningRollout``, ``RolloutRunner``, ``parse_spec_json``
- ``spec``: ``Package``, ``AllAtOnce``, ``Canary``, ``Linear``, ``Shadow`` (+6)
- ``state``: ``NOT_TRIED``, ``ROLLOUT_STATUSES``, ``SCHEMA_VERSION``, ``TERMINAL``,
  ``Assignment`` (+6)
- ``state_assignments``: ``AssignmentsTable``
- ``state_db``: ``StateDatabase``
- ``state_records``: ``RolloutRecord``, ``Assignment``, ``OperatorRequest``,
  ``DecisionRecord``, ``request_from_row`` (+3)
- ``state_requests``: ``OperatorRequestsTable``
- ``step_reports``: ``StepReports``
- ``timeline``: ``Phase``, ``Verdict``, ``Timeline``, ``phases``, ``load_timeline`` (+2)
- ``timeline_png``: ``draw_timeline``
- ``verdicts``: ``package_problem``, ``blocked_on_trial``, ``blocked_reason``,
  ``undecided_reason``, ``verdict_detail``
"""
