"""The training callback's render budget: renders only when due, and never more than its share
of the wall time (the issue's limit is 20% of training throughput)."""

import time
from types import SimpleNamespace

from nerfkit.viewer.training import ViewerCallback


class FakeViewer:
    """Stands in for the viser app: every call to ``update`` 'renders' for ``cost`` seconds."""

    def __init__(self, cost, due=True):
        self.cost, self.due, self.calls = cost, due, 0

    def pending(self):
        return self.due

    def set_status(self, text):
        pass

    def update(self):
        t0 = time.perf_counter()
        time.sleep(self.cost)
        self.calls += 1
        return time.perf_counter() - t0


class FakeRenderer:
    """Takes each training state as the real renderer does (``Renderer.set_params``)."""

    params = buffers = None

    def set_params(self, params, buffers):
        self.params, self.buffers = params, buffers


def _train(cb, seconds, step_s=0.005):
    state = SimpleNamespace(params=None, buffers=None)
    t0, step = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        time.sleep(step_s)  # a training step
        step += 1
        cb.after_step(step, state, {"psnr": 20.0})
    return time.perf_counter() - t0


def test_render_share_stays_under_budget():
    cb = ViewerCallback(max_fraction=0.15)
    cb.viewer, cb.renderer = FakeViewer(0.04), FakeRenderer()
    wall = _train(cb, 1.6)
    assert cb.renders >= 3  # it does render while training
    # Per cycle the share is at most 15%; the first render adds at most 0.04 s / 1.6 s.
    assert cb.render_seconds / wall <= 0.15 + 0.04 / 1.6 + 0.01
    # Without the budget the same loop would spend ~90% of its time rendering.
    greedy = ViewerCallback(max_fraction=0.9)
    greedy.viewer, greedy.renderer = FakeViewer(0.04), FakeRenderer()
    wall = _train(greedy, 0.8)
    assert greedy.render_seconds / wall > 0.5


def test_no_render_when_nothing_is_due():
    cb = ViewerCallback()
    cb.viewer, cb.renderer = FakeViewer(0.01, due=False), FakeRenderer()
    _train(cb, 0.2)
    assert cb.viewer.calls == 0 and cb.renders == 0


def test_the_renderer_takes_the_latest_state_only_when_it_renders():
    """Placing parameters (on a mesh, a copy) happens once per render, not once per step, and a
    render always sees the step's own state."""
    class CountingRenderer(FakeRenderer):
        sets = 0

        def set_params(self, params, buffers):
            super().set_params(params, buffers)
            self.sets += 1

    class RecordingViewer(FakeViewer):
        def __init__(self, cost, renderer):
            super().__init__(cost)
            self.renderer, self.seen = renderer, []

        def set_status(self, text):
            self.step = int(text.split()[1])                   # "step N · PSNR ..."

        def update(self):
            self.seen.append((self.step, self.renderer.params))
            return super().update()

    cb = ViewerCallback(max_fraction=0.2)
    cb.renderer = CountingRenderer()
    cb.viewer = RecordingViewer(0.01, cb.renderer)
    steps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.6:
        time.sleep(0.002)
        steps += 1
        cb.after_step(steps, SimpleNamespace(params=steps, buffers=None), {"psnr": 20.0})
    assert cb.renders >= 2 and cb.renderer.sets == cb.renders < steps / 2
    assert all(step == params for step, params in cb.viewer.seen)  # the step's own state
    # Kept open after training: the final state, even if the last render was earlier.
    cb.keep_open = True
    cb.viewer.serve_forever = lambda: None
    cb.viewer.url, cb.viewer.close = "http://x", lambda: None
    cb.on_train_end({})
    assert cb.renderer.params == steps
