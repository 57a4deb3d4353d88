"""Load testing and performance profiling for ML model endpoints."""

__version__ = "0.1.0"
