"""The live viewer end to end: ``nerfkit view`` on a small trained run, driven in a real headless
Chromium through its page (pick a training camera in the GUI, press "Go to camera"); the
screenshot of the viewer's image matches ``nerfkit render`` of that camera, and a wrong camera
or a blank image does not. Also the camera-path round trip: a file saved by the viewer renders
exactly the frames ``Renderer.render_camera`` gives for its cameras."""

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nerfkit.cli import main
from nerfkit.export.browser import Chromium, find_chromium

requires_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium executable (install Debian's `chromium` package, as .ci/run does, or "
           "set $CHROMIUM)")

SMALL_NGP = ["--model.batch-size", "512", "--model.levels", "8", "--model.max-resolution", "128",
             "--model.occupancy-resolution", "32", "--model.eval-samples", "48",
             "--model.render-chunk", "4096"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny ngp trained for 40 steps on the generated default scene (32 px) with ``--viewer``
    (no browser: it only serves): enough structure that a wrong camera gives another image."""
    from nerfkit.data.synthetic import generate_default_scene
    root = tmp_path_factory.mktemp("viewer")
    scene = generate_default_scene(root / "scene", num_train=8, num_test=2, resolution=32)
    out = root / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # --viewer: serves while training, then closes
        assert main(["train", "ngp", "--data", str(scene), "--max-steps", "40", "--output",
                     str(out), "--no-final-eval", "--viewer", "--viewer-port", "0",
                     *SMALL_NGP]) == 0
    assert re.search(r"viewer: http://127\.0\.0\.1:\d+ ", printed.getvalue()), printed.getvalue()
    return out


def _psnr(a, b):
    return float(-10 * np.log10(np.mean((np.asarray(a, np.float64) - b) ** 2)))


def _render_cli(run_dir, c2ws, fov_deg, width, height, out):
    """``nerfkit render RUN --camera-path FILE`` (nerfkit's own path format) of cameras ``c2ws``
    (as many frames as keyframes: the interpolation passes through each)."""
    import imageio.v2 as imageio
    spec = {"format": "nerfkit-camera-path/v1", "width": width, "height": height,
            "frames": len(c2ws),
            "keyframes": [{"c2w": np.asarray(c).tolist(), "fov_y": fov_deg} for c in c2ws]}
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cam.json"
    path.write_text(json.dumps(spec))
    assert main(["render", str(run_dir), "--camera-path", str(path), "--output", str(out)]) == 0
    return [imageio.imread(out / "frames" / f"{i:04d}.png")[..., :3].astype(np.float64) / 255
            for i in range(len(c2ws))]


def _click(browser, text):
    rect = browser.evaluate(
        "(() => { const b = [...document.querySelectorAll('button')].find(b => b.textContent"
        f".includes({json.dumps(text)})); const r = b.getBoundingClientRect(); "
        "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": rect[0], "y": rect[1],
                                                  "button": "left", "clickCount": 1})


def _type_into(browser, label, value):
    browser.evaluate(
        "(() => { const l = [...document.querySelectorAll('label')].find(l => l.textContent === "
        f"{json.dumps(label)}); const i = document.getElementById(l.htmlFor); i.focus(); "
        "i.select(); })()")
    browser.call("Input.insertText", {"text": str(value)})
    browser.call("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                            "windowsVirtualKeyCode": 13})
    browser.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                            "windowsVirtualKeyCode": 13})


def _wait_for(browser, ok, timeout=60.0):
    """The viewer's render-time text once it says "refined" and satisfies ``ok``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = browser.evaluate(RENDER_INFO)
        if ok(v):
            return v
        time.sleep(0.1)
    raise AssertionError(f"no refined render after {timeout} s")


RENDER_INFO = ("(() => { const i = [...document.querySelectorAll('input')].find(i => "
               "/refined/.test(i.value)); return i ? i.value : ''; })()")


@pytest.mark.slow
@requires_chromium
def test_browser_view_matches_render(run_dir, tmp_path):
    import cv2
    cams = json.loads((run_dir / "scene.json").read_text())["train_cameras"]
    index = 3  # not the camera the viewer opens on (0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "nerfkit.cli", "view", str(run_dir),
                             "--port", "0", "--resolution", "128"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"viewer: (http://\S+) \(port (\d+)\)", "".join(lines))
            url = m.group(1) if m else time.sleep(0.1)
        assert url, "".join(lines)
        with Chromium() as browser:
            browser.goto(url, "[...document.querySelectorAll('button')].some(b => "
                              "b.textContent.includes('Go to camera'))", timeout=60)
            info0 = _wait_for(browser, lambda v: v)  # the refined image of camera 0
            _type_into(browser, "Training camera", index)
            time.sleep(0.3)
            _click(browser, "Go to camera")
            info = _wait_for(browser, lambda v: v and v != info0)  # ... then of camera 3
            time.sleep(1.0)  # the image reaches the canvas after the text
            info = browser.evaluate(RENDER_INFO)
            w, h = map(int, re.search(r"(\d+)x(\d+)", info).groups())
            rect = browser.evaluate("(() => { const r = document.querySelector('canvas')"
                                    ".getBoundingClientRect(); return [r.x, r.y, r.width, "
                                    "r.height]; })()")
            png = browser.screenshot(*rect)
        shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        shot = cv2.resize(shot, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64) / 255
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    fov = math.degrees(2 * math.atan(0.5 * cams["height"] / cams["intrinsics"][index][1]))
    ref, wrong = _render_cli(run_dir, [cams["c2w"][index], cams["c2w"][0]], fov, w, h,
                             tmp_path / "ref")
    # The region clear of the page's overlays (control panel on the right, notices top left).
    crop = (slice(int(0.2 * h), h), slice(0, int(0.6 * w)))
    got = _psnr(shot[crop], ref[crop])
    assert got >= 25.0, (got, info)
    assert _psnr(shot[crop], wrong[crop]) < 25.0
    assert _psnr(np.full_like(shot[crop], shot[crop].mean()), ref[crop]) < 25.0


@pytest.mark.slow
def test_viewer_camera_path_round_trip(run_dir, tmp_path):
    """Keyframes saved by the viewer (nerfstudio's camera_path.json) -> ``nerfkit render``: each
    frame equals ``Renderer.render_camera`` of the camera the file holds (focal length from its
    vertical fov as nerfstudio computes it, H / 2 / tan(fov / 2))."""
    import imageio.v2 as imageio
    from nerfkit.engine.run import load_run
    from nerfkit.viewer import view_run
    run = load_run(run_dir)
    cams = run.scene_json["train_cameras"]
    viewer = view_run(run_dir, port=0, thumbnails=False)
    try:
        viewer.keyframes = [{"c2w": cams["c2w"][1], "fov_y": 40.0},
                            {"c2w": cams["c2w"][5], "fov_y": 55.0}]
        viewer.path_seconds.value, viewer.path_fps.value = 1.0, 3
        viewer.path_w.value, viewer.path_h.value = 40, 30
        saved = viewer.save_camera_path(tmp_path / "camera_path.json")
    finally:
        viewer.close()
    spec = json.loads(saved.read_text())
    frames = spec["camera_path"]
    assert (spec["render_width"], spec["render_height"], len(frames)) == (40, 30, 3)
    first, last = (np.asarray(frames[i]["camera_to_world"]).reshape(4, 4) for i in (0, -1))
    np.testing.assert_allclose(first[:3], cams["c2w"][1], atol=1e-6)
    np.testing.assert_allclose(last[:3], cams["c2w"][5], atol=1e-6)
    np.testing.assert_array_equal(first[3], [0, 0, 0, 1])
    assert (frames[0]["fov"], frames[-1]["fov"]) == (40.0, 55.0)

    assert main(["render", str(run_dir), "--camera-path", str(saved),
                 "--output", str(tmp_path / "out")]) == 0
    renderer = run.renderer()
    for i, fr in enumerate(frames):
        f = 0.5 * 30 / math.tan(0.5 * math.radians(fr["fov"]))
        c2w = np.asarray(fr["camera_to_world"], np.float32).reshape(4, 4)[:3]
        want = renderer.render_camera(c2w, np.array([f, f, 20.0, 15.0], np.float32), 40, 30,
                                      np.ones(3, np.float32))["rgb"]
        got = imageio.imread(tmp_path / "out" / "frames" / f"{i:04d}.png")[..., :3]
        np.testing.assert_allclose(got / 255.0, np.clip(want, 0, 1), atol=1.0 / 255 + 1e-6)
