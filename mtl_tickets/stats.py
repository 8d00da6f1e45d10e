"""Paired comparisons: a contender against its baseline, seed by seed.

A seed fixes data order and task-head initialisation for every contender (DESIGN.md decision 5), so
the per-seed difference cancels what a seed does to both, and is read against the noise that is left.
PROTOCOL.md (mini-GLUE v2) reports exactly these numbers: the mean difference, its 95 % t interval, the
paired t-test p, an exact sign-flip p (no normality assumed: with a handful of seeds all 2^n flips are
enumerated), the seeds ahead, and the smallest difference the design could detect.

    d = PairedDifference.of(ticket_scores, full_scores)  # one score per seed each, same seeds in order
    verdict(d)  # 'no detectable difference (95 % CI [-0.51, +4.13])'
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05  # two-sided: the 95 % interval, both tests and the detectable difference
POWER = 0.8
MAX_EXACT = 16  # sign flips are enumerated up to 2^16 = 65,536 of them; beyond, no permutation p
COLUMNS = ("difference", "reading", "p (t)", "p (sign flips)", "seeds ahead", "detectable at 80 % power")


@dataclass(frozen=True)
class PairedDifference:
    """Contender minus baseline over n seeds. `None` marks what the seeds cannot define: the interval,
    the t-test and the detectable difference need two or more seeds whose differences vary (equal
    differences leave no noise to read them against, and a zero-width interval would overclaim)."""

    n: int
    mean: float
    std: float | None  # sample std of the differences (n - 1 in the denominator); None at n = 1
    ci_low: float | None  # 95 % t interval of the mean difference
    ci_high: float | None
    p_t: float | None  # paired t-test, two-sided
    p_permutation: float | None  # exact sign-flip test, two-sided; None above MAX_EXACT seeds
    ahead: int  # seeds on which the contender scores higher than the baseline
    mde: float | None  # the true mean difference detected with 80 % power at two-sided 0.05

    @classmethod
    def of(cls, values: list[float], baseline: list[float]) -> PairedDifference:
        """`values[i] - baseline[i]` over the seeds; both lists in the same seed order."""
        if not values or len(values) != len(baseline):
            raise ValueError(f"paired scores need equal, non-empty lists, got {len(values)} and {len(baseline)}")
        d = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
        n, mean = len(d), float(d.mean())
        ahead, p_permutation = int((d > 0).sum()), sign_flip_p(d)
        if n == 1:
            return cls(n, mean, None, None, None, None, p_permutation, ahead, None)
        if np.ptp(d) <= 1e-9 * max(1.0, abs(mean)):  # equal up to float rounding of the scores
            return cls(n, mean, 0.0, None, None, None, p_permutation, ahead, None)
        std = float(d.std(ddof=1))
        se, t_crit = std / math.sqrt(n), float(stats.t.ppf(1 - ALPHA / 2, n - 1))
        p_t = float(2 * stats.t.sf(abs(mean) / se, n - 1))
        return cls(n, mean, std, mean - t_crit * se, mean + t_crit * se, p_t, p_permutation, ahead, detectable(n, std))

    def excludes_zero(self) -> bool:
        """Whether the 95 % interval leaves out 0: the only case PROTOCOL v2 calls a difference."""
        return self.ci_low is not None and (self.ci_low > 0 or self.ci_high < 0)

    def cells(self) -> list[str]:
        """The comparison as table cells, in `COLUMNS` order ('n/a' where undefined)."""
        return [f"{self.mean:+.2f}", verdict(self, sign_flips=False), _p(self.p_t), _p(self.p_permutation), f"{self.ahead}/{self.n}",
                "n/a" if self.mde is None else f"{self.mde:.2f}"]

    def __str__(self) -> str:
        """The same cells on one line, for printed summaries."""
        difference, reading, p_t, p_permutation, ahead, mde = self.cells()
        return (f"{difference}, {reading}; p {p_t} (t), {p_permutation} (sign flips); {ahead} seeds ahead; "
                f"detectable at 80 % power: {mde}")


def verdict(d: PairedDifference, unit: str = "seed", sign_flips: bool = True) -> str:
    """PROTOCOL v2's language: a difference is called one only when its 95 % interval excludes 0; where
    the exact sign-flip test does not reach 0.05 too (never below 2 / 2^n: at most 5 seeds it cannot),
    the reading gives its p beside the interval (`sign_flips`; off where a column shows it). `unit`: what
    the pairs are (seeds; tasks where a grid ran one seed per task)."""
    if d.ci_low is None:
        why = f"one {unit}" if d.n == 1 else f"the same difference on every {unit}"
        return f"no detectable difference (no 95 % CI: {why})"
    interval = f"95 % CI [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
    if not d.excludes_zero():
        return f"no detectable difference ({interval})"
    if sign_flips and d.p_permutation is not None and d.p_permutation > ALPHA:  # the t interval leans on normality; say so
        interval += f"; sign-flip p {d.p_permutation:.2f}, at best {2 / 2 ** d.n:.2f} with {d.n} {unit}s"
    return f"a difference ({interval})"


def sign_flip_p(d: np.ndarray) -> float | None:
    """Two-sided exact permutation p: the share of all 2^n sign flips of the differences whose |mean|
    reaches the observed one. Under no difference each flip is as likely as the observed signs."""
    if len(d) > MAX_EXACT:
        return None
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))  # (2^n, n)
    sums = np.abs(signs @ d)
    return float(np.mean(sums >= abs(d.sum()) - 1e-9 * np.abs(d).sum()))  # ties up to float rounding count


def detectable(n: int, std: float) -> float:
    """The smallest true mean difference a two-sided paired t-test at ALPHA on n seeds detects with
    POWER, taking the observed paired std as the true one: the noncentrality at which the noncentral t
    (n - 1 degrees of freedom) passes the critical value with that probability, times std / sqrt(n)."""
    df = n - 1
    t_crit = stats.t.ppf(1 - ALPHA / 2, df)

    def shortfall(nc: float) -> float:  # the lower tail as the upper one of -nc: scipy's far-tail cdf gives NaN
        return float(stats.nct.sf(t_crit, df, nc) + stats.nct.sf(t_crit, df, -nc)) - POWER

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return optimize.brentq(shortfall, 0.0, high) * std / math.sqrt(n)


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"
