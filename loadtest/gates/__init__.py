"""Pass/fail: thresholds and baseline regressions judged on a summary, recorded as gates.json and JUnit."""
