"""``nerfkit export web``: the exported bundle, rendered by a real headless Chromium (WebGL2 on
SwiftShader when there is no GPU), matches nerfkit's own render of the same camera."""

import io
import json

import numpy as np
import pytest

from nerfkit.cli import main
from nerfkit.export.browser import Chromium, find_chromium, render_in_browser, serve_folder
from nerfkit.export.web import dense_texture

requires_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium executable (install Debian's `chromium` package, as .ci/run does, or "
           "set $CHROMIUM)")

STUDENTS = {
    # Small but complete: residual blocks, the R2L global skip; NeRDF's skip layer and series.
    "r2l": ["--model.depth", "6", "--model.width", "16", "--model.points", "4",
            "--model.hard-ratio", "0"],
    "nerdf": ["--model.depth", "4", "--model.width", "16", "--model.points", "4",
              "--model.skip", "2", "--model.samples", "12", "--model.num-basis", "6"],
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from nerfkit.data.synthetic import generate_default_scene
    root = tmp_path_factory.mktemp("web")
    return generate_default_scene(root / "scene", num_train=6, num_test=2, resolution=32)


def _train(scene, family, out, args):
    assert main(["train", family, "--data", str(scene), "--max-steps", "2", "--output", str(out),
                 "--no-final-eval", "--model.batch-size", "64", *args]) == 0


def _psnr(a, b):
    return float(-10 * np.log10(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def test_dense_texture_layout():
    """Texel (g, o) holds W[4g:4g+4, o] per padded input part; the last column the bias."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5 + 3, 6)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    tex = dense_texture(w, b, [5, 3]).astype(np.float32)
    assert tex.shape == (8, 2 + 1 + 1, 4)
    x1, x2 = rng.normal(size=5), rng.normal(size=3)
    groups = np.concatenate([np.pad(x1, (0, 3)), np.pad(x2, (0, 1))]).reshape(3, 4)
    y = np.einsum("gc,ogc->o", groups, tex[:, :3]) + tex[:, 3, 0]
    np.testing.assert_allclose(y[:6], np.concatenate([x1, x2]) @ w + b, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(y[6:], 0.0)


@requires_chromium
@pytest.mark.parametrize("family", ["r2l", "nerdf"])
def test_browser_render_matches_nerfkit(scene, tmp_path, family, capsys):
    import imageio.v2 as imageio
    from nerfkit.engine.run import load_run
    run_dir, out = tmp_path / family, tmp_path / f"{family}-web"
    _train(scene, family, run_dir, STUDENTS[family])
    capsys.readouterr()
    assert main(["export", "web", str(run_dir), str(out)]) == 0
    assert "live WebGL2 viewer" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == {"index.html", "viewer.js", "model.json",
                                              "weights.bin"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["weights"]["bytes"] == (out / "weights.bin").stat().st_size
    # Nothing is fetched from elsewhere: no absolute URLs in the page or the script.
    for name in ("index.html", "viewer.js"):
        assert "http://" not in (out / name).read_text() and "https://" not in \
            (out / name).read_text()

    # A test camera (not the first training camera) at a resolution of its own.
    run = load_run(run_dir)
    test = run.load_split("test")
    c = test.cameras
    w = h = 40
    s = w / c.width
    intr = np.array([c.fx[0], c.fy[0], c.cx[0], c.cy[0]], np.float32) * s
    c2w = np.asarray(c.c2w[0], np.float64)[:3]
    camera = {"c2w": c2w.tolist(), "fx": float(intr[0]), "fy": float(intr[1]),
              "cx": float(intr[2]), "cy": float(intr[3]), "width": w, "height": h}
    bg = np.ones(3, np.float32) if run.info.white_background else np.zeros(3, np.float32)
    ref = np.clip(run.renderer().render_camera(c2w, intr, w, h, bg)["rgb"], 0, 1)
    # The model's output varies over the image: a flat picture would not pass the bar below.
    assert _psnr(np.broadcast_to(ref.mean((0, 1)), ref.shape), ref) < 30

    with serve_folder(out) as url, Chromium() as browser:
        png = render_in_browser(browser, url + "index.html", camera)
    shot = imageio.imread(io.BytesIO(png))[..., :3].astype(np.float64) / 255
    assert shot.shape == (h, w, 3)
    assert _psnr(shot, ref) >= 30.0


def test_prerendered_viewer_for_other_families(scene, tmp_path, capsys):
    run_dir, out = tmp_path / "nerf", tmp_path / "nerf-web"
    _train(scene, "nerf", run_dir, ["--model.depth", "2", "--model.width", "16",
                                    "--model.view-width", "8", "--model.coarse-samples", "4",
                                    "--model.fine-samples", "4"])
    capsys.readouterr()
    assert main(["export", "web", str(run_dir), str(out), "--frames", "3"]) == 0
    said = capsys.readouterr().out
    assert "cannot render live" in said and "pre-rendered" in said
    assert len(list((out / "frames").glob("*.png"))) == 3
    assert (out / "video.mp4").stat().st_size > 0
    assert "Pre-rendered, not live" in (out / "index.html").read_text()
