"""The live viewer: a viser app that renders the browser's camera with a nerfkit model.

Follows the shape of nerfstudio's viser viewer (``nerfstudio/viewer/viewer.py``,
``render_state_machine.py``: a render of the client's camera sent as the scene's background
image, a coarse image while the camera moves and a refined one once it stops, the training
cameras as image frustums, a render panel that saves ``camera_path.json``) and of nerfview
(``nerfview/viewer.py``); the code is nerfkit's own, on viser's public API only.

Threads: viser calls the GUI and camera callbacks from its own threads; they only record what
changed (under a lock). Rendering happens in :meth:`Viewer.update`, called by whoever owns the
model: :meth:`Viewer.serve_forever` for ``nerfkit view``, the training callback
(:mod:`nerfkit.viewer.training`) between steps for ``nerfkit train --viewer``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from nerfkit.export.camera_paths import interpolate_keyframes, nerfstudio_camera_path
from nerfkit.fileio import write_json_atomic
from nerfkit.viewer.cameras import (c2w_from_viser, fov_y_of, view_intrinsics, view_size,
                                    viser_from_c2w)

#: ``render_fn(c2w [3,4] OpenGL, intrinsics [4] pixels, width, height, time or None)
#: -> rgb [height, width, 3]`` in [0, 1].
RenderFn = Callable[[np.ndarray, np.ndarray, int, int, Optional[float]], np.ndarray]


def nearest_neighbour_distances(points: np.ndarray, block: int = 256) -> np.ndarray:
    """Distance from each of ``points [N, 3]`` to its nearest other point (``N >= 2``), in
    blocks of ``block`` rows: memory ``O(block * N)``, not the ``N x N`` matrix (a 2,000-photo
    capture would need 100 MB for it)."""
    p = np.asarray(points, np.float64)
    p = p - p.mean(axis=0)  # centred: the squared-norm expansion loses less to cancellation
    sq = np.einsum("ij,ij->i", p, p)
    out = np.empty(len(p))
    for s in range(0, len(p), block):
        d2 = sq[s:s + block, None] + sq[None] - 2.0 * p[s:s + block] @ p.T
        d2[np.arange(d2.shape[0]), np.arange(s, s + d2.shape[0])] = np.inf
        out[s:s + block] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


@dataclasses.dataclass
class ViewerScene:
    """What the viewer shows besides the live render.

    Attributes:
      c2w: ``[N, 3, 4]`` training cameras (OpenGL, scene coordinates).
      intrinsics: ``[N, 4]`` ``fx, fy, cx, cy`` in pixels of ``width x height`` images.
      times: ``[N]`` in [0, 1] for dynamic scenes, else ``None`` (shows the time slider).
      thumbnails: ``N`` small uint8 images ``[h, w, 3]`` of the training views, or ``None``.
      points, colors: sparse point cloud ``[P, 3]`` (scene coordinates) and uint8 ``[P, 3]``.
      signal: an image/video fit: the viewer shows the reconstruction, not a camera render.
      num_frames: frames of a video fit (its time slider).
    """

    c2w: np.ndarray
    intrinsics: np.ndarray
    width: int
    height: int
    times: Optional[np.ndarray] = None
    thumbnails: Optional[list] = None
    points: Optional[np.ndarray] = None
    colors: Optional[np.ndarray] = None
    signal: bool = False
    num_frames: int = 1


@dataclasses.dataclass
class _ClientState:
    camera: Optional[tuple] = None     # (c2w [3,4], fov_y rad, aspect)
    moved_at: float = 0.0
    level: int = 0                      # 0: needs a render, 1: coarse shown, 2: refined shown
    last_full: float = 0.0


class Viewer:
    """A viser server showing ``scene`` and live renders of each browser's camera.

    Args:
      render_fn: renders a camera (:data:`RenderFn`); for a signal fit, ``signal_fn`` instead.
      scene: cameras, thumbnails, points (:class:`ViewerScene`).
      host, port: where to serve (``port`` 0: any free port; a busy port: the next free one).
      run_dir: default folder of saved camera paths (``RUN/camera_paths/``).
      signal_fn: ``signal_fn(frame) -> rgb [H, W, 3]``: the reconstruction of a video frame
        (image fits: frame 0).
      resolution: initial longer side of the refined render, pixels.
      coarse: the coarse render's longer side is ``resolution / coarse``.
      refresh_s: re-render a still camera this often (the model changes while it trains);
        ``None``: never.
      verbose: print viser's banner.
    """

    def __init__(self, render_fn: Optional[RenderFn], scene: ViewerScene, host: str = "127.0.0.1",
                 port: int = 7007, run_dir: Optional[Path] = None,
                 signal_fn: Optional[Callable[[int], np.ndarray]] = None,
                 resolution: int = 256, coarse: int = 4, refresh_s: Optional[float] = None,
                 verbose: bool = False):
        import viser
        self.render_fn, self.signal_fn, self.scene = render_fn, signal_fn, scene
        self.coarse, self.refresh_s = coarse, refresh_s
        self.run_dir = None if run_dir is None else Path(run_dir)
        self._lock = threading.Lock()
        self._clients: dict[int, _ClientState] = {}
        self._stop = threading.Event()
        self.keyframes: list[dict] = []
        self._hidden: Optional[int] = None
        self.last_render: dict[str, Any] = {}
        self.server = viser.ViserServer(host=host, port=port, verbose=verbose)
        self.server.gui.configure_theme(show_logo=False, show_share_button=False,
                                        control_width="medium")
        self.host, self.port = host, self.server.get_port()
        c2w = np.asarray(scene.c2w, np.float64)
        centres = c2w[:, :3, 3]
        self._extent = float(np.linalg.norm(centres - centres.mean(0), axis=-1).max() or 1.0)
        self._up = c2w[:, :3, 1].mean(0)
        self._up = self._up / (np.linalg.norm(self._up) or 1.0)
        self._build_gui(resolution)
        if not scene.signal:
            self._add_scene_objects()
        self.server.on_client_connect(self._on_connect)
        self.server.on_client_disconnect(self._on_disconnect)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---------------------------------------------------------------- GUI and scene objects
    def _build_gui(self, resolution: int) -> None:
        gui = self.server.gui
        self.status = gui.add_markdown("")
        self.render_info = gui.add_text("Render", initial_value="", disabled=True)
        self.res_slider = gui.add_slider("Resolution", min=32, max=2048, step=16,
                                         initial_value=int(resolution))
        self.res_slider.on_update(lambda _: self.invalidate())
        self.time_slider = None
        if self.scene.signal and self.scene.num_frames > 1:
            self.time_slider = gui.add_slider("Frame", min=0, max=self.scene.num_frames - 1,
                                              step=1, initial_value=0)
        elif self.scene.times is not None:
            self.time_slider = gui.add_slider("Time", min=0.0, max=1.0, step=0.01,
                                              initial_value=0.0)
        if self.time_slider is not None:
            self.time_slider.on_update(lambda _: self.invalidate())
        if self.scene.signal:
            return
        self.show_cams = gui.add_checkbox("Training cameras", initial_value=True)
        self.show_cams.on_update(lambda ev: self._set_frustums_visible(ev.target.value))
        n = len(self.scene.c2w)
        self.cam_index = gui.add_number("Training camera", initial_value=0, min=0, max=n - 1,
                                        step=1)
        go = gui.add_button("Go to camera")
        go.on_click(lambda ev: self.go_to_training_camera(ev.client, int(self.cam_index.value)))
        with gui.add_folder("Camera path"):
            add = gui.add_button("Add keyframe")
            clear = gui.add_button("Clear keyframes")
            self.kf_info = gui.add_text("Keyframes", initial_value="0", disabled=True)
            self.path_seconds = gui.add_number("Seconds", initial_value=4.0, min=0.1, step=0.1)
            self.path_fps = gui.add_number("FPS", initial_value=30, min=1, step=1)
            self.path_w = gui.add_number("Render width", initial_value=int(self.scene.width),
                                         min=8, step=1)
            self.path_h = gui.add_number("Render height", initial_value=int(self.scene.height),
                                         min=8, step=1)
            self.preview = gui.add_slider("Preview", min=0.0, max=1.0, step=0.001,
                                          initial_value=0.0)
            default = (self.run_dir / "camera_paths" / "camera_path.json"
                       if self.run_dir is not None else Path("camera_path.json"))
            self.save_path = gui.add_text("Save to", initial_value=str(default))
            save = gui.add_button("Save camera path")
        add.on_click(lambda ev: self._add_keyframe(ev.client))
        clear.on_click(lambda _: self._clear_keyframes())
        self.preview.on_update(lambda ev: self._preview(ev.client, ev.target.value))
        save.on_click(lambda _: self._save_path_clicked())

    def _add_scene_objects(self) -> None:
        sc = self.scene
        # Frustums no larger than a third of the typical spacing of neighbouring cameras, so
        # that from one training camera its neighbours (a capture's dense ring) do not cover the
        # view; at most 8% of the rig's extent (sparse rigs such as Blender's).
        centres = np.asarray(sc.c2w)[:, :3, 3]
        scale = 0.08 * self._extent
        if len(centres) > 1:
            scale = min(scale, float(np.median(nearest_neighbour_distances(centres))) / 3.0) \
                or scale
        self._frustums = []
        for i, c2w in enumerate(np.asarray(sc.c2w)):
            wxyz, pos = viser_from_c2w(c2w)
            thumb = None if sc.thumbnails is None else sc.thumbnails[i]
            h = self.server.scene.add_camera_frustum(
                f"/train_cameras/{i:04d}", fov=fov_y_of(sc.intrinsics[i], sc.height),
                aspect=sc.width / sc.height, scale=scale, image=thumb, format="jpeg",
                wxyz=wxyz, position=pos, color=(60, 90, 200))
            h.on_click(lambda ev, i=i: self.go_to_training_camera(ev.client, i))
            self._frustums.append(h)
        if sc.points is not None and len(sc.points):
            self.server.scene.add_point_cloud(
                "/sparse_points", points=np.asarray(sc.points, np.float32),
                colors=np.asarray(sc.colors if sc.colors is not None else
                                  np.full((len(sc.points), 3), 200), np.uint8),
                point_size=0.01 * self._extent, point_shape="rounded")

    def _set_frustums_visible(self, on: bool) -> None:
        for i, h in enumerate(getattr(self, "_frustums", [])):
            h.visible = on and i != self._hidden

    # ------------------------------------------------------------------- clients and cameras
    def _on_connect(self, client) -> None:
        with self._lock:
            self._clients[client.client_id] = _ClientState()
        if not self.scene.signal:  # start at the first training camera, the scene's up as up
            client.camera.up_direction = tuple(self._up)
            self.go_to_training_camera(client, 0)

        @client.camera.on_update
        def _(cam) -> None:
            c2w = c2w_from_viser(cam.wxyz, cam.position)
            with self._lock:
                st = self._clients.get(client.client_id)
                if st is not None:
                    st.camera = (c2w, float(cam.fov), float(cam.aspect))
                    st.moved_at = time.monotonic()
                    st.level = 0
            self._unhide_frustum(c2w)

    def _on_disconnect(self, client) -> None:
        with self._lock:
            self._clients.pop(client.client_id, None)

    def set_camera(self, client, c2w, fov_y: Optional[float] = None) -> None:
        """Moves ``client``'s camera to OpenGL ``c2w [3, 4]`` (and vertical ``fov_y``, radians)."""
        c2w = np.asarray(c2w, np.float64)
        wxyz, pos = viser_from_c2w(c2w)
        with client.atomic():
            if fov_y is not None:
                client.camera.fov = float(fov_y)
            client.camera.position = pos
            # look_at a point in front (orbit centre), then the exact orientation
            client.camera.look_at = pos - c2w[:3, 2] * self._extent
            client.camera.wxyz = wxyz

    def go_to_training_camera(self, client, index: int) -> None:
        """Moves ``client``'s camera to training camera ``index`` (pose and field of view)."""
        if client is None:
            return
        i = int(np.clip(index, 0, len(self.scene.c2w) - 1))
        # The camera's own frustum (its image plane just in front) would hide the render.
        frustums = getattr(self, "_frustums", [])
        if self._hidden is not None and self._hidden != i and self.show_cams.value:
            frustums[self._hidden].visible = True
        if frustums:
            frustums[i].visible = False
            self._hidden = i
        self.set_camera(client, self.scene.c2w[i],
                        fov_y_of(self.scene.intrinsics[i], self.scene.height))

    def _unhide_frustum(self, c2w: np.ndarray) -> None:
        """Shows the frustum hidden by :meth:`go_to_training_camera` once the camera left it."""
        i = self._hidden
        if i is None or np.abs(c2w[:, 3] - self.scene.c2w[i][:3, 3]).max() < 1e-3 * self._extent:
            return
        self._hidden = None
        if self.show_cams.value:
            self._frustums[i].visible = True

    def invalidate(self) -> None:
        """Marks every client's image out of date (a GUI value changed)."""
        with self._lock:
            for st in self._clients.values():
                st.level = 0

    def set_status(self, text: str) -> None:
        self.status.content = text

    # ------------------------------------------------------------------------- rendering
    def _time(self) -> Optional[float]:
        if self.time_slider is None or self.scene.signal:
            return None
        return float(self.time_slider.value)

    def pending(self) -> bool:
        """Whether some client's image is out of date (a render is due now)."""
        now = time.monotonic()
        with self._lock:
            for st in self._clients.values():
                if st.camera is None and not self.scene.signal:
                    continue
                if st.level == 0 or (st.level == 1 and now - st.moved_at > 0.2):
                    return True
                if self.refresh_s is not None and now - st.last_full > self.refresh_s:
                    return True
        return False

    def update(self) -> float:
        """Renders every client whose image is due (a coarse image right after a move, the
        refined one once the camera has been still for 0.2 s, a refresh every ``refresh_s``)
        and sends it; returns the seconds spent rendering."""
        spent = 0.0
        now = time.monotonic()
        with self._lock:
            todo = []
            for cid, st in self._clients.items():
                if st.camera is None and not self.scene.signal:
                    continue
                if st.level == 0:
                    todo.append((cid, st.camera, self.scene.signal))
                    st.level = 2 if self.scene.signal else 1  # a signal has one resolution
                elif (st.level == 1 and now - st.moved_at > 0.2) or (
                        self.refresh_s is not None and now - st.last_full > self.refresh_s):
                    todo.append((cid, st.camera, True))
                    st.level = 2
                    st.last_full = now
        clients = self.server.get_clients()
        for cid, cam, full in todo:
            client = clients.get(cid)
            if client is None:
                continue
            t0 = time.perf_counter()
            try:
                rgb, w, h, label = self._render(cam, full)
            except Exception as e:  # noqa: BLE001 (keep serving; say what went wrong)
                self.render_info.value = f"render failed: {type(e).__name__}: {e}"[:200]
                print(f"viewer: render failed ({type(e).__name__}: {e})", flush=True)
                continue
            dt = time.perf_counter() - t0
            spent += dt
            img = (np.clip(np.asarray(rgb, np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
            client.scene.set_background_image(img, format="jpeg", jpeg_quality=92)
            self.last_render = {"client": cid, "width": w, "height": h, "seconds": dt,
                                "full": full, "time": time.time()}
            self.render_info.value = f"{1000 * dt:.0f} ms, {w}x{h} ({label})"
        return spent

    def _render(self, cam, full: bool):
        """``(rgb [h, w, 3], w, h, label)`` of one client's camera (or the signal's frame)."""
        if self.scene.signal:
            frame = 0 if self.time_slider is None else int(self.time_slider.value)
            rgb = self.signal_fn(frame)
            w, h = rgb.shape[1], rgb.shape[0]
            label = f"frame {frame}"
        else:
            c2w, fov, aspect = cam
            side = int(self.res_slider.value)
            if not full:
                side = max(16, side // self.coarse)
            w, h = view_size(aspect, side)
            rgb = self.render_fn(c2w, view_intrinsics(fov, w, h), w, h, self._time())
            label = "refined" if full else "coarse"
        return rgb, w, h, label

    def serve_forever(self, idle_s: float = 0.02) -> None:
        """Renders as clients move until :meth:`close` (or Ctrl-C)."""
        while not self._stop.is_set():
            if not self.update():
                time.sleep(idle_s)

    def close(self) -> None:
        self._stop.set()
        self.server.stop()

    # ------------------------------------------------------------------------ camera paths
    def _current(self, client) -> tuple[np.ndarray, float]:
        return c2w_from_viser(client.camera.wxyz, client.camera.position), float(client.camera.fov)

    def _add_keyframe(self, client) -> None:
        c2w, fov = self._current(client)
        kf = {"c2w": c2w.tolist(), "fov_y": math.degrees(fov)}
        t = self._time()
        if t is not None:
            kf["time"] = t
        self.keyframes.append(kf)
        i = len(self.keyframes) - 1
        wxyz, pos = viser_from_c2w(c2w)
        self.server.scene.add_camera_frustum(
            f"/keyframes/{i:03d}", fov=fov, aspect=client.camera.aspect,
            scale=0.06 * self._extent, wxyz=wxyz, position=pos, color=(230, 120, 30))
        self.kf_info.value = str(len(self.keyframes))

    def _clear_keyframes(self) -> None:
        for i in range(len(self.keyframes)):
            self.server.scene.remove_by_name(f"/keyframes/{i:03d}")
        self.keyframes = []
        self.kf_info.value = "0"

    def camera_path(self, frames: Optional[int] = None):
        """The keyframes interpolated into ``frames`` poses (default: seconds x fps), as
        :class:`~nerfkit.export.camera_paths.CameraPath` (``fov_y`` in degrees)."""
        if not self.keyframes:
            raise ValueError("no keyframes")
        frames = frames or max(1, int(round(float(self.path_seconds.value) *
                                            float(self.path_fps.value))))
        c2w = np.asarray([k["c2w"] for k in self.keyframes])
        fov = np.asarray([k["fov_y"] for k in self.keyframes])
        times = (np.asarray([k["time"] for k in self.keyframes])
                 if all("time" in k for k in self.keyframes) else None)
        return interpolate_keyframes(c2w, frames, fov, times)

    def _preview(self, client, u: float) -> None:
        if not self.keyframes or client is None:
            return
        path = self.camera_path(201)
        i = int(round(u * (len(path.c2w) - 1)))
        self.set_camera(client, path.c2w[i], math.radians(float(path.fov_y[i])))

    def save_camera_path(self, path: Path) -> Path:
        """Writes the keyframes as nerfstudio's ``camera_path.json`` (the run's scene
        coordinates; see :mod:`nerfkit.export.camera_paths`)."""
        cp = self.camera_path()
        spec = nerfstudio_camera_path(cp, int(self.path_w.value), int(self.path_h.value),
                                      float(self.path_fps.value), keyframes=self.keyframes)
        return write_json_atomic(Path(path), spec)

    def _save_path_clicked(self) -> None:
        try:
            out = self.save_camera_path(Path(self.save_path.value))
            msg = f"saved {out}"
        except (ValueError, OSError) as e:
            msg = f"not saved: {e}"
        self.set_status(msg)
        print(f"viewer: {msg}", flush=True)


def read_ply_points(path: Path) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(xyz [P, 3] float32, rgb [P, 3] uint8 or None)`` of a binary little-endian or ASCII PLY
    point cloud (the ``sparse_pc.ply`` that ``process-data`` writes)."""
    from nerfkit.errors import DataError
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise DataError(path, "not a PLY file")
    header = raw[:end].decode("ascii", "replace").splitlines()
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1",
             "int": "<i4", "uint": "<u4", "short": "<i2", "ushort": "<u2", "char": "i1"}
    fmt, n, props, in_vertex = None, 0, [], False
    for line in header:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            in_vertex = tok[1] == "vertex"
            if in_vertex:
                n = int(tok[2])
            elif props:
                break  # only the leading vertex element is read
        elif tok[0] == "property" and in_vertex:
            if tok[1] not in types:
                raise DataError(path, f"unsupported PLY property type {tok[1]!r}")
            props.append((tok[2], types[tok[1]]))
    body = raw[end + len(b"end_header\n"):]
    if fmt == "binary_little_endian":
        rec = np.frombuffer(body, dtype=np.dtype(props), count=n)
        col = lambda k: rec[k]
    elif fmt == "ascii":
        arr = np.loadtxt(body.decode().splitlines()[:n], ndmin=2)
        names = [p[0] for p in props]
        col = lambda k: arr[:, names.index(k)]
    else:
        raise DataError(path, f"unsupported PLY format {fmt!r}")
    names = [p[0] for p in props]
    xyz = np.stack([col(k) for k in "xyz"], -1).astype(np.float32)
    rgb = (np.stack([col(k) for k in ("red", "green", "blue")], -1).astype(np.uint8)
           if all(k in names for k in ("red", "green", "blue")) else None)
    return xyz, rgb


def sparse_points(scene_json: dict, max_points: int = 200_000
                  ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The run's sparse point cloud in its scene coordinates (``ply_file_path`` of a
    ``transforms.json`` dataset, mapped by ``transforms.file_transform``), or ``(None, None)``."""
    ply = scene_json.get("metadata", {}).get("ply_file_path")
    if not ply or not Path(ply).exists():
        return None, None
    xyz, rgb = read_ply_points(Path(ply))
    t = scene_json.get("transforms", {}).get("file_transform")
    if t is not None:
        t = np.asarray(t, np.float64)
        xyz = (xyz.astype(np.float64) @ t[:3, :3].T + t[:3, 3]).astype(np.float32)
    if len(xyz) > max_points:
        keep = np.random.default_rng(0).choice(len(xyz), max_points, replace=False)
        xyz, rgb = xyz[keep], None if rgb is None else rgb[keep]
    return xyz, rgb


def thumbnails(images: np.ndarray, max_side: int = 96) -> list[np.ndarray]:
    """uint8 thumbnails ``[h, w, 3]`` (longer side ``<= max_side``, strided) of ``images
    [N, H, W, C]`` in [0, 1] or uint8."""
    out = []
    for im in images:
        im = np.asarray(im)
        step = max(1, int(math.ceil(max(im.shape[:2]) / max_side)))
        im = im[::step, ::step, :3]
        if im.dtype != np.uint8:
            im = (np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8)
        out.append(np.ascontiguousarray(im))
    return out


def scene_from_run(scene_json: dict, train_images: Optional[np.ndarray] = None) -> ViewerScene:
    """A :class:`ViewerScene` from a run's ``scene.json`` (and its training images, for the
    frustums' thumbnails)."""
    cams = scene_json["train_cameras"]
    times = cams.get("times")
    signal = bool(scene_json.get("metadata", {}).get("signal"))
    info = scene_json.get("info", {})
    pts, cols = sparse_points(scene_json)
    return ViewerScene(
        c2w=np.asarray(cams["c2w"], np.float64), intrinsics=np.asarray(cams["intrinsics"],
                                                                        np.float64),
        width=int(cams["width"]), height=int(cams["height"]),
        times=None if times is None else np.asarray(times, np.float64),
        thumbnails=None if train_images is None else thumbnails(train_images),
        points=pts, colors=cols, signal=signal,
        num_frames=max(1, int(info.get("num_frames", 1) or 1)))

