"""How many samples a percentile claim needs: MLPerf's early-stopping rule, without pandas or numpy.

With n samples, the chance that none lands above the true q-quantile is q**n. A claim about that
percentile means something only when that chance is small: at most ``SUFFICIENCY_RISK`` (0.13%),
which gives MLPerf's 662 samples for p99 and 6,643 for p99.9. The capacity search sizes its steps
with it, and the run's analysis and the comparisons check their percentiles against it.
"""

from __future__ import annotations

import math

SUFFICIENCY_RISK = 0.0013  # q**n at or below this: MLPerf's 662 samples for p99


def samples_needed(percentile: float) -> int:
    q = percentile / 100
    return 1 if q <= 0 else math.ceil(math.log(SUFFICIENCY_RISK) / math.log(q))
