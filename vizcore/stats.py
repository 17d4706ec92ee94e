"""Small statistics shared by the analyses: intervals for proportions.

Written out (a few lines) rather than imported: scipy/statsmodels would be a heavy dependency
for one closed-form interval, and the exact ends (0 and 1 at 0 % and 100 %) matter here.
"""
from __future__ import annotations

import math

__all__ = ["wilson_interval"]


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``correct / n`` (95 % by default).

    Wilson, "Probable inference, the law of succession, and statistical inference", JASA 1927:
    unlike the normal approximation it stays inside [0, 1] and is sensible for small ``n`` and
    proportions near 0 or 1 (probe accuracies, shape bias from a few hundred decisions).
    ``n <= 0`` gives the uninformative ``(0, 1)``.
    """
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)
    hi = 1.0 if correct >= n else min(1.0, centre + half)  # exact at the ends, not 1 - 1e-16
    return min(lo, p), max(hi, p)
