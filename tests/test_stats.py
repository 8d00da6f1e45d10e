"""Paired comparisons against scipy and hand counts, at the small n the protocol runs (1 to 6 seeds)."""

import math

import numpy as np
import pytest
from scipy import stats

from mtl_tickets.stats import MAX_EXACT, PairedDifference, detectable, verdict

CONTENDER = [56.3, 55.1, 58.0, 54.2, 57.9]
BASELINE = [55.0, 55.6, 56.1, 52.0, 56.4]


def test_interval_and_t_test_match_scipy():
    d = PairedDifference.of(CONTENDER, BASELINE)
    reference = stats.ttest_rel(CONTENDER, BASELINE)
    interval = reference.confidence_interval(0.95)
    gains = np.subtract(CONTENDER, BASELINE)
    assert d.n == 5 and d.ahead == 4
    assert d.mean == pytest.approx(gains.mean()) and d.std == pytest.approx(gains.std(ddof=1))
    assert (d.ci_low, d.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert d.p_t == pytest.approx(reference.pvalue)


def test_a_t_interval_by_hand():
    """Differences 1, 2, 3: mean 2, std 1, t(0.975, 2) = 4.302653: 2 ± 4.302653 / sqrt(3)."""
    d = PairedDifference.of([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302653 / math.sqrt(3)
    assert (d.ci_low, d.ci_high) == (pytest.approx(2 - half, abs=1e-6), pytest.approx(2 + half, abs=1e-6))


def test_sign_flip_p_counts_every_flip():
    """All positive: only the observed signs and their mirror reach |mean|, 2 of 2^5. Differences 3, 2, -1
    sum to 4; of the 8 flips, 3+2-1, 3+2+1 and their mirrors reach |sum| >= 4: 4 of 8."""
    assert PairedDifference.of([1, 2, 3, 4, 5], [0] * 5).p_permutation == 2 / 32
    assert PairedDifference.of([3, 2, -1], [0, 0, 0]).p_permutation == 4 / 8


def test_sign_flip_p_matches_scipy_permutation_test():
    rng = np.random.default_rng(0)
    x, y = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 1.0, 6)
    reference = stats.permutation_test((x, y), lambda a, b: np.mean(a - b), permutation_type="samples",
                                       alternative="two-sided", n_resamples=np.inf)
    assert PairedDifference.of(list(x), list(y)).p_permutation == pytest.approx(reference.pvalue)


def test_the_detectable_difference_has_80_percent_power():
    """Simulated: a true difference of `detectable(5, std)` is found by the paired t-test 80 % of the time."""
    mde = detectable(5, 2.0)
    rng = np.random.default_rng(1)
    samples = rng.normal(mde, 2.0, size=(40_000, 5))
    rejected = stats.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.80, abs=0.01)
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 2.0 / math.sqrt(5)  # the z approximation: too small at n = 5
    assert mde > 1.2 * normal and detectable(200, 2.0) == pytest.approx(normal * math.sqrt(5 / 200), rel=0.01)
    observed = PairedDifference.of(CONTENDER, BASELINE)
    assert observed.mde == pytest.approx(detectable(5, observed.std))


def test_one_seed_defines_only_the_difference_and_the_flips():
    d = PairedDifference.of([52.0], [50.5])
    assert (d.n, d.mean, d.ahead, d.p_permutation) == (1, 1.5, 1, 1.0)
    assert d.std is d.ci_low is d.ci_high is d.p_t is d.mde is None
    assert verdict(d) == "no detectable difference (no 95 % CI: one seed)"


def test_two_seeds_give_the_wide_interval_of_one_degree_of_freedom():
    d = PairedDifference.of([51.0, 53.0], [50.0, 50.0])
    interval = stats.ttest_rel([51.0, 53.0], [50.0, 50.0]).confidence_interval(0.95)
    assert (d.ci_low, d.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert d.p_permutation == 0.5 and d.mde is not None and d.mde > d.ci_high - d.mean


@pytest.mark.parametrize("values, baseline, p_permutation", [
    ([0.3, 0.3, 0.3], [0.2, 0.2, 0.2], 2 / 8),  # equal up to float rounding
    ([50.0, 51.0], [50.0, 51.0], 1.0),  # no difference at all
])
def test_equal_differences_leave_the_interval_and_tests_undefined(values, baseline, p_permutation):
    d = PairedDifference.of(values, baseline)
    assert d.std == 0.0 and d.ci_low is d.ci_high is d.p_t is d.mde is None
    assert d.p_permutation == pytest.approx(p_permutation)
    assert verdict(d) == "no detectable difference (no 95 % CI: the same difference on every seed)"
    assert "nan" not in str(d)


def test_verdict_calls_a_difference_only_when_the_interval_excludes_zero():
    up = PairedDifference.of([1, 2, 3, 4, 5], [0] * 5)
    down = PairedDifference.of([0] * 5, [1, 2, 3, 4, 5])
    unsure = PairedDifference.of(CONTENDER, BASELINE)
    exact = "sign-flip p 0.06, at best 0.06 with 5 seeds"  # all five ahead: the exact test can go no lower
    assert verdict(up) == f"a difference (95 % CI [+{up.ci_low:.2f}, +{up.ci_high:.2f}]; {exact})" and up.ci_low > 0
    assert verdict(down) == f"a difference (95 % CI [{down.ci_low:.2f}, {down.ci_high:.2f}]; {exact})" and down.ci_high < 0
    assert verdict(unsure) == f"no detectable difference (95 % CI [{unsure.ci_low:+.2f}, {unsure.ci_high:+.2f}])"
    assert unsure.ci_low < 0 < unsure.ci_high


def test_a_difference_the_sign_flip_test_also_finds_reads_as_the_interval_alone():
    d = PairedDifference.of([1, 2, 3, 4, 5, 6], [0] * 6)  # six seeds ahead: sign-flip p 2 / 64
    assert d.p_permutation < 0.05 and verdict(d) == f"a difference (95 % CI [+{d.ci_low:.2f}, +{d.ci_high:.2f}])"
    tasks = PairedDifference.of([2.0, 2.2, 2.4], [0.0] * 3)
    assert verdict(tasks, "task").endswith("; sign-flip p 0.25, at best 0.25 with 3 tasks)")


def test_the_printed_line_and_table_cells_carry_every_number():
    d = PairedDifference.of([1, 2, 3, 4, 5], [0] * 5)
    assert d.cells() == ["+3.00", "a difference (95 % CI [+1.04, +4.96])", "0.013", "0.062", "5/5", "2.66"]
    assert str(d) == ("+3.00, a difference (95 % CI [+1.04, +4.96]); p 0.013 (t), 0.062 (sign flips); 5/5 seeds ahead; "
                      "detectable at 80 % power: 2.66")
    assert PairedDifference.of([1.0], [0.0]).cells()[2:] == ["n/a", "1", "1/1", "n/a"]


def test_too_many_seeds_to_enumerate_leave_the_permutation_p_undefined():
    d = PairedDifference.of(list(range(MAX_EXACT + 1)), [0.5] * (MAX_EXACT + 1))
    assert d.p_permutation is None and d.p_t is not None


@pytest.mark.parametrize("values, baseline", [([], []), ([1.0, 2.0], [1.0])])
def test_unpaired_lists_are_refused(values, baseline):
    with pytest.raises(ValueError, match="equal, non-empty"):
        PairedDifference.of(values, baseline)
