"""Shared vocabulary below everything else: errors, tensor specs and the model layout, histograms,
durable writes, crash points.
"""
