"""Pure analysis of measured runs: saturation and trust, capacity search, confidence intervals, output
agreement, cost.
"""
