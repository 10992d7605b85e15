"""Imports every Runner module so each registers its format with the loader."""
from edgeseg.runtime import onnx_runner, tflite_runner, coreml_runner  # noqa: F401
