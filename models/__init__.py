"""Reference models for the edge inference agent: sources, trainers and builders.

``python -m models.build --out build/models`` trains the digits MLP and writes
one model directory per version (and per deliberately bad build), each with an
ONNX export and genuine Neo-format (TVM graph executor) artifacts that the real
``libdlr.so`` loads.
"""
