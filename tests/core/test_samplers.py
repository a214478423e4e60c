"""Samplers: strata, bounds, and inverse-CDF sampling against an independent numpy CDF."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy import stats

from nerfkit.core import samplers


def _pw_linear_cdf(t_edges, weights, padding):
    """Numpy CDF of the piecewise-constant PDF ((w + pad) / sum, uniform within an interval)."""
    t_edges = np.asarray(t_edges, np.float64)
    p = np.asarray(weights, np.float64) + padding
    p = p / p.sum()
    knots = np.concatenate([[0.0], np.cumsum(p)])

    def cdf(t):
        t = np.asarray(t, np.float64)
        i = np.clip(np.searchsorted(t_edges, t, side="right") - 1, 0, len(p) - 1)
        frac = np.clip((t - t_edges[i]) / (t_edges[i + 1] - t_edges[i]), 0.0, 1.0)
        return knots[i] + frac * p[i]

    return cdf


def _inverse_cdf(t_edges, weights, padding, u):
    """Numpy inverse CDF by a per-sample linear scan over the intervals."""
    p = np.asarray(weights, np.float64) + padding
    p = p / p.sum()
    out = []
    for uk in u:
        acc = 0.0
        for i, pi in enumerate(p):
            if uk <= acc + pi or i == len(p) - 1:
                out.append(t_edges[i] + (uk - acc) / pi * (t_edges[i + 1] - t_edges[i]))
                break
            acc += pi
    return np.array(out)


def test_stratified_deterministic_matches_linspace():
    near = jnp.array([[2.0], [0.5]])
    far = jnp.array([[6.0], [4.5]])
    t = samplers.stratified_samples(None, near, far, 8, randomized=False)
    np.testing.assert_allclose(t, [np.linspace(2, 6, 9), np.linspace(0.5, 4.5, 9)], atol=1e-6)
    t = samplers.stratified_samples(None, near, far, 8, randomized=False, lindisp=True)
    np.testing.assert_allclose(
        t, [1 / np.linspace(1 / 2, 1 / 6, 9), 1 / np.linspace(1 / 0.5, 1 / 4.5, 9)], rtol=1e-5)


@pytest.mark.parametrize("lindisp", [False, True])
def test_stratified_randomized_stays_in_strata(lindisp):
    n_rays, s = 500, 16
    near = jnp.full((n_rays, 1), 2.0)
    far = jnp.full((n_rays, 1), 6.0)
    t = np.asarray(samplers.stratified_samples(jax.random.PRNGKey(0), near, far, s, True, lindisp),
                   np.float64)
    assert t.shape == (n_rays, s + 1)
    assert np.all(np.diff(t, axis=-1) >= 0)
    assert np.all(t >= 2.0) and np.all(t <= 6.0)
    # Map into the unit "stratum space" (linear in t, or in disparity): midpoint i in [i/S, (i+1)/S].
    if lindisp:
        unit = (1 / t - 1 / 2.0) / (1 / 6.0 - 1 / 2.0)
    else:
        unit = (t - 2.0) / 4.0
    mids = 0.5 * (unit[:, 1:] + unit[:, :-1])
    lo = np.arange(s) / s
    assert np.all(mids >= lo - 1e-6) and np.all(mids <= lo + 1 / s + 1e-6)
    # Interior edges are uniform in [(i - 1/2)/S, (i + 1/2)/S]: check mean and spread.
    offs = unit[:, 1:-1] * s - np.arange(1, s)                       # uniform in [-1/2, 1/2]
    assert abs(offs.mean()) < 0.02
    assert abs(offs.var() - 1 / 12) < 0.005
    assert np.all(np.abs(offs) <= 0.5 + 1e-4)
    # Jitter actually happens and depends on the key.
    t2 = samplers.stratified_samples(jax.random.PRNGKey(1), near, far, s, True, lindisp)
    assert not np.allclose(t, t2)


def test_stratified_jits_with_static_count():
    f = jax.jit(samplers.stratified_samples, static_argnums=(3, 4, 5))
    t = f(jax.random.PRNGKey(0), jnp.ones((3, 1)), jnp.full((3, 1), 2.0), 4, True, False)
    assert t.shape == (3, 5)


def test_sample_pdf_iid_draws_pass_ks_against_piecewise_linear_cdf():
    # One sample per ray: the uniform variates are i.i.d., so the KS test is exact.
    t_edges = np.array([0.0, 0.5, 0.7, 1.5, 2.0, 3.5, 4.0])
    weights = np.array([0.05, 0.4, 0.1, 0.0, 0.3, 0.15])
    n = 4000
    t = samplers.sample_pdf(jax.random.PRNGKey(42), jnp.broadcast_to(jnp.asarray(t_edges), (n, 7)),
                            jnp.broadcast_to(jnp.asarray(weights), (n, 6)), 1, True, padding=1e-5)
    x = np.asarray(t[:, 0], np.float64)
    cdf = _pw_linear_cdf(t_edges, weights, 1e-5)
    assert stats.kstest(x, cdf).pvalue > 0.01
    # The test has power: a plausible bug (weights shifted by one interval) is rejected.
    wrong = _pw_linear_cdf(t_edges, np.roll(weights, 1), 1e-5)
    assert stats.kstest(x, wrong).pvalue < 1e-6
    # The empty interval [1.5, 2.0] receives (almost) nothing.
    assert np.mean((x > 1.5) & (x < 2.0)) < 1e-3


def test_sample_pdf_stratified_batches_follow_pdf_chi_square():
    t_edges = np.array([1.0, 1.2, 2.0, 2.1, 3.0])
    weights = np.array([0.3, 0.1, 0.5, 0.1])
    n_rays, k = 64, 50
    t = np.asarray(samplers.sample_pdf(
        jax.random.PRNGKey(7), jnp.broadcast_to(jnp.asarray(t_edges), (n_rays, 5)),
        jnp.broadcast_to(jnp.asarray(weights), (n_rays, 4)), k, True), np.float64)
    assert np.all(np.diff(t, axis=-1) >= 0)
    assert np.all((t >= 1.0) & (t <= 3.0))
    counts = np.histogram(t.ravel(), bins=t_edges)[0]
    expected = (weights + 1e-5) / (weights + 1e-5).sum() * t.size
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < stats.chi2.ppf(0.999, df=3)
    # Within an interval samples are uniform: sub-bin the heaviest interval [2.0, 2.1].
    inside = t[(t >= 2.0) & (t < 2.1)]
    sub = np.histogram(inside, bins=np.linspace(2.0, 2.1, 5))[0]
    assert stats.chisquare(sub).pvalue > 1e-3


def test_sample_pdf_deterministic_is_inverse_cdf_at_bin_centres():
    rng = np.random.default_rng(0)
    t_edges = np.sort(rng.uniform(2.0, 6.0, 17))
    weights = rng.uniform(size=16) ** 3
    k = 24
    t = samplers.sample_pdf(None, jnp.asarray(t_edges)[None], jnp.asarray(weights)[None], k,
                            randomized=False, padding=0.01)
    ref = _inverse_cdf(t_edges, weights, 0.01, (np.arange(k) + 0.5) / k)
    np.testing.assert_allclose(t[0], ref, rtol=1e-5, atol=1e-5)


def test_sample_pdf_zero_and_peaked_weights():
    t_edges = jnp.linspace(0.0, 8.0, 9)[None]
    # All-zero weights: padding makes the PDF uniform.
    t = samplers.sample_pdf(None, t_edges, jnp.zeros((1, 8)), 4, False)
    np.testing.assert_allclose(t, [[1.0, 3.0, 5.0, 7.0]], atol=1e-5)
    # One-hot weights: all samples land in that interval.
    t = samplers.sample_pdf(jax.random.PRNGKey(0), t_edges, jnp.zeros((1, 8)).at[0, 5].set(1.0),
                            32, True)
    assert np.all((t >= 5.0) & (t <= 6.0))


def test_sample_pdf_stops_gradients_and_jits():
    t_edges = jnp.linspace(0.0, 1.0, 5)[None]
    w = jnp.array([[0.1, 0.5, 0.3, 0.1]])

    def f(t_edges, w):
        return jnp.sum(samplers.sample_pdf(jax.random.PRNGKey(0), t_edges, w, 8, True) ** 2)

    gt, gw = jax.grad(f, argnums=(0, 1))(t_edges, w)
    np.testing.assert_array_equal(gt, 0.0)
    np.testing.assert_array_equal(gw, 0.0)
    jitted = jax.jit(samplers.sample_pdf, static_argnums=(3, 4))
    np.testing.assert_allclose(jitted(jax.random.PRNGKey(0), t_edges, w, 8, True),
                               samplers.sample_pdf(jax.random.PRNGKey(0), t_edges, w, 8, True),
                               atol=1e-6)


def test_merge_samples_is_sorted_union():
    rng = np.random.default_rng(5)
    coarse = np.sort(rng.uniform(2, 6, (3, 65)), -1)
    fine = rng.uniform(2, 6, (3, 128))
    merged = samplers.merge_samples(jnp.asarray(coarse), jnp.asarray(fine))
    assert merged.shape == (3, 65 + 128)
    np.testing.assert_allclose(merged, np.sort(np.concatenate([coarse, fine], -1), -1))
    g = jax.grad(lambda c: samplers.merge_samples(c, jnp.asarray(fine)).sum())(jnp.asarray(coarse))
    np.testing.assert_array_equal(g, 0.0)


def test_coarse_to_fine_pipeline_shapes():
    # NeRF's 64 coarse + 128 fine samples, end to end with a jit.
    @jax.jit
    def pipeline(key, near, far):
        k1, k2 = jax.random.split(key)
        coarse = samplers.stratified_samples(k1, near, far, 64, True)
        mid = 0.5 * (coarse[..., 1:] + coarse[..., :-1])
        w = jnp.exp(-((mid - 4.0) ** 2) / 0.01)
        fine = samplers.sample_pdf(k2, coarse, w, 128, True)
        return samplers.merge_samples(coarse, fine), fine

    edges, fine = pipeline(jax.random.PRNGKey(0), jnp.full((2, 1), 2.0), jnp.full((2, 1), 6.0))
    assert edges.shape == (2, 193)
    assert np.all(np.diff(np.asarray(edges), axis=-1) >= 0)
    # Importance samples concentrate around the surface at t = 4.
    assert np.mean(np.abs(np.asarray(fine) - 4.0) < 0.3) > 0.9
