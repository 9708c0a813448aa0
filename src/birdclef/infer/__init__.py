"""Inference: windowed prediction, post-processing, ensembling, ONNX export and backends, Kaggle bundle, predict."""
