"""Each scheduler's sampling distribution against its formula (seeded, statistical)."""

import numpy as np
import pytest

from mtl_tickets.samplers import SAMPLERS, SamplerContext, build_sampler
from mtl_tickets.schema import ConfigError

CTX = SamplerContext(names=["cola", "rte", "mrpc"], batches=[60, 10, 30], epochs=3)


def realised(sampler, steps, start=0, seed=5):
    counts = np.bincount([sampler.choose(s, seed) for s in range(start, start + steps)], minlength=3)
    return counts / steps


def close_to(p, q, n):
    """Within 4 binomial standard deviations."""
    return np.all(np.abs(np.asarray(p) - np.asarray(q)) <= 4 * np.sqrt(np.asarray(q) * (1 - np.asarray(q)) / n) + 1e-9)


@pytest.mark.parametrize("name,options,expected", [
    ("proportional", {}, [0.6, 0.1, 0.3]),
    ("uniform", {}, [1 / 3] * 3),
    ("temperature", {"temperature": 2.0}, np.sqrt([60, 10, 30]) / np.sqrt([60, 10, 30]).sum()),
    ("temperature", {"temperature": 1.0, "cap": 20}, [0.4, 0.2, 0.4]),
])
def test_fixed_distributions_match_their_formula(name, options, expected):
    sampler = build_sampler(name, CTX, options)
    np.testing.assert_allclose(sampler.probabilities(0), expected)
    assert close_to(realised(sampler, 6000), expected, 6000)


def test_annealed_goes_from_proportional_to_near_uniform():
    sampler = build_sampler("annealed", CTX)
    sizes = np.array([60, 10, 30], dtype=float)
    np.testing.assert_allclose(sampler.probabilities(0), sizes / sizes.sum())
    last_epoch = 2 * CTX.steps_per_epoch
    np.testing.assert_allclose(sampler.probabilities(last_epoch), sizes**0.2 / (sizes**0.2).sum())
    assert close_to(realised(sampler, 100, start=last_epoch), sampler.probabilities(last_epoch), 100)


def test_mtdnn_sampler_visits_every_batch_of_every_task_once_per_epoch():
    sampler = build_sampler("mtdnn", CTX)
    for epoch in range(2):
        start = epoch * CTX.steps_per_epoch
        picks = [sampler.choose(s, 9) for s in range(start, start + CTX.steps_per_epoch)]
        assert np.bincount(picks).tolist() == CTX.batches
    first = [sampler.choose(s, 9) for s in range(100)]
    second = [sampler.choose(s, 9) for s in range(100, 200)]
    assert first != second  # shuffled anew each epoch


def test_round_robin_cycles():
    sampler = build_sampler("round_robin", CTX)
    assert [sampler.choose(s, 0) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_dynamic_favours_the_task_whose_loss_falls_slowest_and_resumes_from_its_state():
    sampler = build_sampler("dynamic", CTX, {"smoothing": 0.0})
    for task, (first, now) in enumerate([(1.0, 0.2), (1.0, 1.0), (2.0, 0.4)]):
        sampler.observe(task, first)
        sampler.observe(task, now)
    ratio = np.array([0.2, 1.0, 0.2]) * np.array([60, 10, 30])
    np.testing.assert_allclose(sampler.probabilities(0), ratio / ratio.sum())
    assert close_to(realised(sampler, 4000), ratio / ratio.sum(), 4000)
    copy = build_sampler("dynamic", CTX, {"smoothing": 0.0})
    copy.load_state_dict(sampler.state_dict())
    assert [copy.choose(s, 1) for s in range(50)] == [sampler.choose(s, 1) for s in range(50)]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_choice_depends_on_seed_and_step_only(name):
    a, b = build_sampler(name, CTX), build_sampler(name, CTX)
    steps = list(range(0, 300, 7))
    assert [a.choose(s, 3) for s in steps] == [b.choose(s, 3) for s in reversed(steps)][::-1]


def test_unknown_sampler_and_option_are_clear_errors():
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        build_sampler("temprature", CTX)
    with pytest.raises(ConfigError, match="has no option 'temp'.*temperature"):
        build_sampler("temperature", CTX, {"temp": 2})
