"""What the agent reports: metrics from the loop's histograms, health, CloudWatch EMF.

Modules and their public names:

- ``emf``: ``render_emf``, ``emf_lines``
- ``health``: ``ThermalReading``, ``HealthSnapshot``, ``HealthProbe``, ``read_cpu_times``,
  ``read_loadavg`` (+3)
- ``metrics``: ``HistogramLike``, ``StatsLike``, ``VariantSource``, ``MetricsReporter``,
  ``RequestStatsLike`` (+1)
"""
