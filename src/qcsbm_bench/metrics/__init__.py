"""Evaluation metrics used by the benchmark."""
