"""Circular coordinates (planted angles on primary-circle patches, a clear refusal on noise),
the direct orientation fit, their agreement, and the three-circle score."""

from __future__ import annotations

import numpy as np
import pytest

from convlens.topology import (
    FilterCloud,
    NoCircleError,
    analyze_cloud,
    angle_agreement,
    circular_coordinates,
    circular_correlation,
    filter_orientation,
    gaussian_patches,
    plot_analysis,
    primary_circle_patches,
    three_circle_patches,
    three_circle_score,
)


@pytest.fixture(scope="module")
def planted():
    t = np.random.default_rng(3).uniform(0, 2 * np.pi, 1500)
    return t, primary_circle_patches(1500, 3, noise=0.1, seed=4, angles=t)


def test_circular_coordinates_recover_the_planted_angle(planted):
    t, patches = planted
    cc = circular_coordinates(patches, n_landmarks=100)
    assert abs(circular_correlation(cc.angles, t)) >= 0.95
    assert cc.dominance > 10 and cc.uncovered == 0 and cc.bar[0] < cc.eps < cc.bar[1]
    # 5x5 patches with more noise: the same
    t5 = np.random.default_rng(5).uniform(0, 2 * np.pi, 1200)
    cc5 = circular_coordinates(primary_circle_patches(1200, 5, noise=0.3, seed=6, angles=t5))
    assert abs(circular_correlation(cc5.angles, t5)) >= 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circular_coordinates_follow_arc_length_where_the_circle_is_unevenly_sampled(seed):
    # trained filters crowd at some orientations; the coordinate must not race across the sparse
    # arcs. Angles drawn with density 1 + 0.8 cos t (9x sparser at pi than at 0), by rejection.
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, 4000)
    t = t[rng.uniform(0, 1.8, t.size) < 1 + 0.8 * np.cos(t)][:800]
    cc = circular_coordinates(primary_circle_patches(t.size, 3, noise=0.1, seed=seed + 10, angles=t))
    agree = angle_agreement(cc.angles, t)
    # edge weights 1/sqrt(deg deg) gave 0.85-0.91 here; 1/(deg deg) 0.97-0.99 and 5 degrees
    assert abs(agree["correlation"]) >= 0.95 and agree["median_error_deg"] <= 12


def test_circular_correlation_closed_forms():
    a = np.random.default_rng(0).uniform(0, 2 * np.pi, 500)
    assert circular_correlation(a, a + 1.3) == pytest.approx(1.0, abs=1e-9)  # rotation
    assert circular_correlation(a, 0.4 - a) == pytest.approx(-1.0, abs=1e-9)  # reflection
    b = np.random.default_rng(1).uniform(0, 2 * np.pi, 500)
    assert abs(circular_correlation(a, b)) < 4 / np.sqrt(500)  # independent: ~N(0, 1/n)
    ag = angle_agreement(0.4 - a, a)
    assert ag["direction"] == -1 and ag["median_error_deg"] == pytest.approx(0.0, abs=1e-6)


def test_noise_has_no_long_h1_class_and_says_so():
    with pytest.raises(NoCircleError, match=r"no long H1 class: the longest H1 bars are .*only \d\.\d\dx the next"):
        circular_coordinates(gaussian_patches(1500, 3, seed=2), n_landmarks=100)


def test_orientation_fit_is_exact_on_linear_edges(planted):
    t = np.random.default_rng(8).uniform(0, 2 * np.pi, 50)
    angle, explained = filter_orientation(primary_circle_patches(50, 3, angles=t), (3, 3))
    err = np.angle(np.exp(1j * (angle - t)))
    assert np.abs(err).max() < 1e-5 and np.allclose(explained, 1.0, atol=1e-5)  # float32 patches


def test_three_circle_score_separates_the_models():
    three = three_circle_score(three_circle_patches(2000, 3, noise=0.05, seed=1))
    primary = three_circle_score(primary_circle_patches(2000, 3, noise=0.05, seed=1))
    noise = three_circle_score(gaussian_patches(2000, 3, seed=1))
    assert three.three > 0.95 and three.gain > 0.15 and three.secondary_x > 0.1 and three.secondary_y > 0.1
    assert primary.primary > 0.95 and primary.gain < 0.02
    assert noise.three < 0.1 and noise.three == pytest.approx(noise.noise_three, abs=0.03)


def _cloud(points) -> FilterCloud:
    n = len(points)
    z = np.zeros(n, dtype=int)
    return FilterCloud(points.astype(np.float32), (3, 3), z, z, np.arange(n), z, z - 1, ["ref"], ["conv1"])


def test_analysis_gives_every_filter_an_angle_or_a_message(planted, tmp_path):
    t, patches = planted
    a = analyze_cloud(_cloud(patches), resolution=8, gain=2.0, n_landmarks=60)
    assert a.angle_values is not None and len(a.angle_values) == len(a.cloud)
    assert a.angles["agreement"]["correlation"] ** 2 >= 0.9 and sum(a.angles["histogram"]) == len(a.cloud)
    assert a.summary()["three_circles"]["gain"] < 0.05
    plot_analysis(a, tmp_path / "a.png")
    a.save(tmp_path / "cell")
    assert np.allclose(type(a).load(tmp_path / "cell").angle_values, a.angle_values)
    b = analyze_cloud(_cloud(gaussian_patches(600, 3, seed=9)), resolution=6, gain=2.0, n_landmarks=60)
    assert b.angle_values is None and "no long H1 class" in b.angles["message"]
    plot_analysis(b, tmp_path / "b.png")
