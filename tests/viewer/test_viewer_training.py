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
