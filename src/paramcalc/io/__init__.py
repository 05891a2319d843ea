"""Model files read as data: Keras archives and configs, legacy HDF5, safetensors headers, ONNX (native
parsers in isolated child processes). Never a framework loader, never pickle, never eval."""
