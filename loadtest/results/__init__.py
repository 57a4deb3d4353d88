"""A run's directory: its typed summary (one writer), its files written whole, per-second histograms,
and the capacity file.
"""
