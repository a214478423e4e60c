"""Lens distortion against OpenCV (the independent reference): undistortPoints / projectPoints for
the radial-tangential model, fisheye.undistortPoints / fisheye.projectPoints for the fisheye model;
rays of distorted cameras re-project (cv2) to their pixel; zero distortion is the pinhole camera."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

cv2 = pytest.importorskip("cv2")

from nerfkit.core import cameras as cam
from nerfkit.core import distortion as dist
from nerfkit.export.camera_paths import look_at

# OpenCV's default undistortPoints runs 5 fixed-point iterations; iterate to convergence instead.
RT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-12)
FE_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)

W, H = 800, 600                      # phone-like image, 4:3
FW, FH = 1920, 1440                  # GoPro-like fisheye image (wide, 4:3)


def _k(fx, fy, cx, cy):
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _cv_rt(p):
    """nerfstudio order (k1, k2, k3, k4, p1, p2) -> OpenCV's (k1, k2, p1, p2, k3)."""
    assert p[3] == 0.0
    return np.array([p[0], p[1], p[4], p[5], p[2]], np.float64)


def _pixels(width, height, n_random=200, seed=0):
    """Corners, edge midpoints, the centre and random points over the whole image [N, 2]."""
    rng = np.random.default_rng(seed)
    fixed = [(u, v) for u in (0.0, width / 2, width) for v in (0.0, height / 2, height)]
    rand = rng.uniform([0, 0], [width, height], (n_random, 2))
    return np.concatenate([np.array(fixed), rand]).astype(np.float64)


def _rt_invertible(p, r_image):
    """Whether the radial part of the model is monotone (a usable lens) out to beyond the image
    corner radius ``r_image`` (normalised): a filter on random draws, in float64."""
    r = np.linspace(0.0, 3.0, 30001)
    r2 = r * r
    g = r * (1 + p[0] * r2 + p[1] * r2 ** 2 + p[2] * r2 ** 3)
    dg = np.gradient(g, r)
    reach = np.nonzero(g >= 1.1 * r_image)[0]
    return reach.size > 0 and np.all(dg[:reach[0] + 1] > 0.2)


def _rt_draws(n, seed):
    """Realistic radial-tangential parameters (k1 in [-0.3, 0.3]) with focal lengths for an
    800x600 image, keeping draws whose model is invertible out to the image corners."""
    rng = np.random.default_rng(seed)
    out = [(700.0, np.array([-0.3, 0.1, 0.0, 0.0, 0.0, 0.0])),      # strong barrel, corner test
           (700.0, np.array([0.3, 0.05, 0.02, 0.0, 0.002, -0.002]))]  # strong pincushion
    while len(out) < n:
        f = rng.uniform(550, 1000)
        p = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.05),
                      0.0, rng.uniform(-2e-3, 2e-3), rng.uniform(-2e-3, 2e-3)])
        if _rt_invertible(p, np.hypot(W / 2, H / 2) / f):
            out.append((f, p))
    return out


def _fe_invertible(p, theta_d_image):
    """Whether theta_d(theta) is monotone and reaches beyond the image corner's distorted radius
    ``theta_d_image`` before 85 degrees (a lens that sees its own corners): a filter, float64."""
    t = np.linspace(0.0, np.radians(85), 30001)
    t2 = t * t
    g = t * (1 + p[0] * t2 + p[1] * t2 ** 2 + p[2] * t2 ** 3 + p[3] * t2 ** 4)
    reach = np.nonzero(g >= 1.05 * theta_d_image)[0]
    return reach.size > 0 and np.all(np.gradient(g, t)[:reach[0] + 1] > 0.2)


def _fe_draws(n, seed):
    """Fisheye parameters of the kind GoPro calibrations give, for a 1920x1440 image whose
    corners are ~70 degrees off axis (draws whose lens cannot see its corners are skipped)."""
    rng = np.random.default_rng(seed)
    out = [(870.0, np.array([0.04, 0.01, -0.005, 0.001, 0.0, 0.0]))]
    while len(out) < n:
        f = rng.uniform(820, 950)
        p = np.array([rng.uniform(-0.05, 0.1), rng.uniform(-0.05, 0.05),
                      rng.uniform(-0.02, 0.02), rng.uniform(-0.01, 0.01), 0.0, 0.0])
        if _fe_invertible(p, np.hypot(FW / 2, FH / 2) / f):
            out.append((f, p))
    return out


def _ours_undistort(pix, f, cx, cy, p, model):
    pix = jnp.asarray(pix, jnp.float32)
    return np.asarray(dist.undistort_pixels(pix[:, 0], pix[:, 1], f, f, cx, cy,
                                            jnp.asarray(p, jnp.float32), model), np.float64)


# ------------------------------------------------------------------------- against OpenCV

@pytest.mark.parametrize("f,p", _rt_draws(8, seed=1))
def test_radial_tangential_undistort_matches_cv2(f, p):
    pix = _pixels(W, H)
    ref = cv2.undistortPoints(pix[:, None], _k(f, f, W / 2, H / 2), _cv_rt(p),
                              criteria=RT_CRITERIA)[:, 0]
    # OpenCV converged: its points re-project to the input pixels.
    back, _ = cv2.projectPoints(np.concatenate([ref, np.ones((len(ref), 1))], 1), np.zeros(3),
                                np.zeros(3), _k(f, f, W / 2, H / 2), _cv_rt(p))
    assert np.abs(back[:, 0] - pix).max() < 1e-6
    ours = _ours_undistort(pix, f, W / 2, H / 2, p, dist.OPENCV)
    # Compared in pixels (normalised * f); float32 Newton.
    assert np.abs(ours - ref).max() * f < 2e-3


@pytest.mark.parametrize("f,p", _fe_draws(6, seed=2))
def test_fisheye_undistort_matches_cv2(f, p):
    pix = _pixels(FW, FH)
    K = _k(f, f, FW / 2, FH / 2)
    ref = cv2.fisheye.undistortPoints(pix[:, None], K, p[:4], criteria=FE_CRITERIA)[:, 0]
    assert np.degrees(np.arctan(np.hypot(*ref.T).max())) > 60     # corners far off axis
    ours = _ours_undistort(pix, f, FW / 2, FH / 2, p, dist.OPENCV_FISHEYE)
    # As angles (what rays are made of): directions agree to well below a pixel's angle.
    ang = lambda xy: np.arctan(np.hypot(*xy.T))
    assert np.abs(ang(ours) - ang(ref)).max() < 1e-5
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("f,p", _rt_draws(4, seed=3))
def test_radial_tangential_forward_matches_cv2_project_points(f, p):
    rng = np.random.default_rng(4)
    xy = rng.uniform(-0.6, 0.6, (300, 2))
    ref, _ = cv2.projectPoints(np.concatenate([xy, np.ones((300, 1))], 1), np.zeros(3),
                               np.zeros(3), np.eye(3), _cv_rt(p))
    ours = dist.distort(jnp.asarray(xy, jnp.float32), jnp.asarray(p, jnp.float32), dist.OPENCV)
    np.testing.assert_allclose(np.asarray(ours), ref[:, 0], atol=2e-6)


@pytest.mark.parametrize("f,p", _fe_draws(4, seed=5))
def test_fisheye_forward_matches_cv2_project_points(f, p):
    rng = np.random.default_rng(6)
    xy = rng.uniform(-2.5, 2.5, (300, 2))                            # out to ~74 degrees
    ref, _ = cv2.fisheye.projectPoints(np.concatenate([xy, np.ones((300, 1))], 1)[None],
                                       np.zeros(3), np.zeros(3), np.eye(3), p[:4])
    ours = dist.distort(jnp.asarray(xy, jnp.float32), jnp.asarray(p, jnp.float32),
                        dist.OPENCV_FISHEYE)
    np.testing.assert_allclose(np.asarray(ours), ref[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- round trips, Jacobian

def test_round_trips_including_k4():
    rng = np.random.default_rng(7)
    xy = jnp.asarray(rng.uniform(-0.5, 0.5, (500, 2)), jnp.float32)
    # k4 (nerfstudio's r^8 term) has no OpenCV counterpart: checked by round trip only.
    rt = jnp.asarray([-0.2, 0.05, 0.01, -0.005, 1e-3, -1e-3], jnp.float32)
    back = dist.undistort(dist.distort(xy, rt, dist.OPENCV), rt, dist.OPENCV)
    np.testing.assert_allclose(back, xy, atol=2e-6)
    fe = jnp.asarray([0.05, -0.02, 0.01, -0.003, 0.0, 0.0], jnp.float32)
    xy_wide = xy * 5.0                                                # up to ~74 degrees
    back = dist.undistort(dist.distort(xy_wide, fe, dist.OPENCV_FISHEYE), fe,
                          dist.OPENCV_FISHEYE)
    np.testing.assert_allclose(back, xy_wide, rtol=2e-5, atol=2e-6)
    xd = jnp.asarray(rng.uniform(-0.5, 0.5, (500, 2)), jnp.float32)
    again = dist.distort(dist.undistort(xd, rt, dist.OPENCV), rt, dist.OPENCV)
    np.testing.assert_allclose(again, xd, atol=2e-6)


def test_radial_tangential_jacobian_matches_autodiff():
    p = jnp.asarray([-0.2, 0.05, 0.01, -0.005, 1e-3, -2e-3], jnp.float32)
    xy = jnp.asarray(np.random.default_rng(8).uniform(-0.7, 0.7, (10, 2)), jnp.float32)
    _, _, fx_x, fx_y, fy_x, fy_y = dist._rt_residual_and_jacobian(
        xy[:, 0], xy[:, 1], 0.0, 0.0, *(p[i] for i in range(6)))
    jac = jax.vmap(jax.jacfwd(lambda q: dist.radial_tangential_distort(q, p)))(xy)
    ours = jnp.stack([jnp.stack([fx_x, fx_y], -1), jnp.stack([fy_x, fy_y], -1)], -2)
    np.testing.assert_allclose(ours, jac, rtol=1e-5, atol=1e-6)


def test_pinhole_and_unknown_model():
    xy = jnp.asarray([[0.1, -0.2]], jnp.float32)
    zeros = jnp.zeros(6)
    np.testing.assert_array_equal(dist.undistort(xy, zeros, dist.PINHOLE), xy)
    with pytest.raises(ValueError, match="unknown camera model"):
        dist.undistort(xy, zeros, "FOV")
    with pytest.raises(ValueError, match=r"\[\.\.\., 6\]"):
        dist.undistort(xy, jnp.zeros(5), dist.OPENCV)


def test_fisheye_beyond_ninety_degrees_stays_finite():
    # theta_d = 2.5 rad for k = 0 is beyond 90 degrees: clamped, finite, pointing outward.
    xy = jnp.asarray([[2.5, 0.0], [0.0, -3.0], [0.0, 0.0]], jnp.float32)
    out = np.asarray(dist.undistort(xy, jnp.zeros(6), dist.OPENCV_FISHEYE))
    assert np.all(np.isfinite(out)) and out[0, 0] > 100 and out[1, 1] < -100
    np.testing.assert_array_equal(out[2], [0.0, 0.0])
    g = jax.grad(lambda q: dist.undistort(q, jnp.zeros(6), dist.OPENCV_FISHEYE).sum())(xy)
    assert np.all(np.isfinite(np.asarray(g)))


# ---------------------------------------------------------------------- rays of distorted cameras

def _look_at(eye, target, up=(0.0, 0.0, 1.0)):
    return look_at(eye, target, up)


def _cv_pose(c2w):
    """OpenGL c2w [3, 4] -> OpenCV (rvec, tvec) of the world-to-camera transform."""
    w2c = np.linalg.inv(np.concatenate([c2w, [[0, 0, 0, 1.0]]]))
    w2c_cv = np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c                  # y down, z forward
    return cv2.Rodrigues(w2c_cv[:3, :3])[0], w2c_cv[:3, 3]


@pytest.mark.parametrize("model", [dist.OPENCV, dist.OPENCV_FISHEYE])
def test_image_rays_reproject_to_their_pixels(model):
    c2w = _look_at([2.0, -3.0, 1.0], [0.1, 0.2, -0.1])
    if model == dist.OPENCV:
        (f, p), = _rt_draws(3, seed=9)[2:]
        width, height = W // 10, H // 10
        f = f / 10
    else:
        f, p = 87.0, np.array([0.04, 0.01, -0.005, 0.001, 0.0, 0.0])
        width, height = FW // 10, FH // 10
    cx, cy = width / 2 + 1.3, height / 2 - 0.7
    cams = cam.make_cameras(c2w[None], f, f * 1.01, width, height, cx, cy, p, model)
    rays = cam.image_rays(cams, 0, 0.1, 10.0)
    o = np.asarray(rays.origins, np.float64).reshape(-1, 3)
    d = np.asarray(rays.directions, np.float64).reshape(-1, 3)
    depth = np.random.default_rng(10).uniform(0.5, 5.0, (len(o), 1))
    pts = o + depth * d
    rvec, tvec = _cv_pose(c2w)
    K = _k(f, f * 1.01, cx, cy)
    if model == dist.OPENCV:
        uv, _ = cv2.projectPoints(pts, rvec, tvec, K, _cv_rt(p))
    else:
        uv, _ = cv2.fisheye.projectPoints(pts[None], rvec, tvec, K, p[:4])
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([u, v], -1).reshape(-1, 2), atol=2e-3)
    # t is still the z-depth along the optical axis.
    z_cam = (pts - c2w[:, 3]) @ c2w[:, 2]
    np.testing.assert_allclose(z_cam, -depth[:, 0], rtol=1e-5)


def test_zero_distortion_is_exactly_pinhole():
    c2w = np.stack([_look_at([1.0, 2.0, 3.0], [0, 0, 0]), _look_at([-2.0, 1.0, 0.5], [0, 0, 0])])
    pin = cam.make_cameras(c2w, 60.0, 62.0, 40, 30, 19.5, 15.5)
    zero = cam.make_cameras(c2w, 60.0, 62.0, 40, 30, 19.5, 15.5, np.zeros(6), dist.OPENCV)
    assert pin.distortion is None and pin.camera_model == dist.PINHOLE
    assert zero.distortion.shape == (2, 6) and zero.camera_model == dist.OPENCV
    for i in range(2):
        a, b = cam.image_rays(pin, i, 0.1, 5.0), cam.image_rays(zero, i, 0.1, 5.0)
        for field in ("origins", "directions", "viewdirs"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # Under jit as well.
    u = jnp.linspace(0.0, 40.0, 7)
    pinhole = jax.jit(lambda u: cam.pixel_directions(u, u, 60.0, 62.0, 19.5, 15.5))(u)
    distorted = jax.jit(lambda u, d: cam.pixel_directions(u, u, 60.0, 62.0, 19.5, 15.5, d,
                                                          dist.OPENCV))(u, jnp.zeros(6))
    np.testing.assert_array_equal(pinhole, distorted)


def test_jit_and_vmap_over_cameras():
    rng = np.random.default_rng(11)
    draws = _rt_draws(4, seed=12)
    params = jnp.asarray(np.stack([p for _, p in draws]), jnp.float32)          # [4, 6]
    xy = jnp.asarray(rng.uniform(-0.4, 0.4, (4, 64, 2)), jnp.float32)
    one = jax.jit(lambda q, k: dist.undistort(q, k, dist.OPENCV))
    batched = jax.jit(jax.vmap(one))(xy, params)
    loop = np.stack([np.asarray(one(xy[i], params[i])) for i in range(4)])
    np.testing.assert_allclose(batched, loop, atol=1e-6)
    # Broadcasting [4, 1, 6] against [4, 64] points gives the same.
    np.testing.assert_allclose(one(xy, params[:, None]), loop, atol=1e-6)
    fe = jnp.asarray([[0.04, 0.01, -0.005, 0.001, 0, 0], [0.0, 0.02, 0.0, 0.0, 0, 0]])
    fe_one = jax.jit(lambda q, k: dist.undistort(q, k, dist.OPENCV_FISHEYE))
    np.testing.assert_allclose(jax.jit(jax.vmap(fe_one))(xy[:2] * 2, fe),
                               np.stack([fe_one(xy[i] * 2, fe[i]) for i in range(2)]),
                               rtol=1e-6, atol=1e-6)


def test_cameras_keep_distortion_through_indexing_and_scaling():
    c2w = np.tile(np.eye(4), (3, 1, 1))
    d = np.array([[0.1, 0, 0, 0, 0, 0], [0.2, 0, 0, 0, 0, 0], [0.3, 0, 0, 0, 0, 0]])
    cams = cam.make_cameras(c2w, 100.0, 100.0, 64, 48, distortion=d)
    assert cams.camera_model == dist.OPENCV                           # the default with params
    np.testing.assert_array_equal(cams[1].distortion, d[1:2].astype(np.float32))
    np.testing.assert_array_equal(cams[[2, 0]].distortion[:, 0], np.float32([0.3, 0.1]))
    half = cams.scaled(0.5)
    assert half.camera_model == dist.OPENCV and half.distortion is cams.distortion
    # Pixel centre j + 1/2 of the half-size image is continuous coordinate 2j + 1 of the full
    # one: the same normalised point, so the same ray (distortion is resolution independent).
    small = cam.image_rays(half, 2, 0.1, 5.0)
    v, u = np.meshgrid(2 * np.arange(24) + 1.0, 2 * np.arange(32) + 1.0, indexing="ij")
    big = cam.camera_rays(jnp.asarray(cams.c2w[2]), jnp.asarray(u), jnp.asarray(v), 100.0, 100.0,
                          32.0, 24.0, 0.1, 5.0, distortion=jnp.asarray(d[2]),
                          camera_model=dist.OPENCV)
    np.testing.assert_allclose(small.directions, big.directions, atol=1e-5)
    plain = cam.camera_rays(jnp.asarray(cams.c2w[2]), jnp.asarray(u), jnp.asarray(v), 100.0,
                            100.0, 32.0, 24.0, 0.1, 5.0)
    assert np.abs(np.asarray(small.directions) - np.asarray(plain.directions)).max() > 1e-2
    fisheye = cam.make_cameras(c2w, 100.0, 100.0, 64, 48, camera_model=dist.OPENCV_FISHEYE)
    np.testing.assert_array_equal(fisheye.distortion, np.zeros((3, 6)))
    with pytest.raises(ValueError, match="PINHOLE"):
        cam.make_cameras(c2w, 100.0, 100.0, 64, 48, distortion=d, camera_model=dist.PINHOLE)
    with pytest.raises(ValueError, match="unknown camera model"):
        cam.make_cameras(c2w, 100.0, 100.0, 64, 48, camera_model="SIMPLE_RADIAL")
    with pytest.raises(ValueError, match="distortion must be"):
        cam.make_cameras(c2w, 100.0, 100.0, 64, 48, distortion=np.zeros(4))
    with pytest.raises(ValueError, match="PINHOLE"):
        cam.pixel_directions(jnp.zeros(2), jnp.zeros(2), 1.0, 1.0, 0.0, 0.0, jnp.zeros(6),
                             dist.PINHOLE)
