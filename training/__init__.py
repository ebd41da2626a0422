"""Offline training: fit, calibrate, evaluate, export to ONNX, sign and publish bundles."""
