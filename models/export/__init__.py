"""Exporters from trained weights to the formats devices run: ONNX and Neo (DLR)."""
