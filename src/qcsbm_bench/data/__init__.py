"""Data sets used by the benchmark."""
