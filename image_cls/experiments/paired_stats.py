"""The statistics behind every table's claims: paired per-seed differences with a t interval, and the exact
paired test on the same images that decides the L2T-DLF guard."""
from __future__ import annotations

import math
import statistics

# two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (then the normal's 1.96)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def paired_summary(diffs: list[float]) -> dict:
    """Mean of per-seed differences (ours minus theirs), its 95 % t interval (None for one seed), wins (< 0), ties."""
    mean = statistics.mean(diffs)
    ci95 = None
    if len(diffs) > 1:
        quantile = _T975[len(diffs) - 2] if len(diffs) <= len(_T975) + 1 else 1.96
        half = quantile * statistics.stdev(diffs) / math.sqrt(len(diffs))
        ci95 = [mean - half, mean + half]
    return {"seeds": len(diffs), "differences": diffs, "mean_difference": mean, "ci95": ci95,
            "wins": sum(d < 0 for d in diffs), "ties": sum(d == 0 for d in diffs)}


def mcnemar_one_sided(ours_only: int, theirs_only: int) -> float:
    """Exact one-sided McNemar p-value that ours is more accurate: P(X >= ours_only) for X ~ Binomial(n, 1/2),
    n the discordant images (`ours_only` right only under ours, `theirs_only` right only under theirs).

    On one set of images the two students' errors are paired, so only the images on which they disagree carry
    evidence; two error rates of 500 images compared unpaired carry about 1.7 points of sampling noise each.
    """
    n = ours_only + theirs_only
    return sum(math.comb(n, k) for k in range(ours_only, n + 1)) / 2 ** n if n else 1.0
