"""The API reference builds from the docstrings with one command (``docs/build_api.sh``),
without a pdoc warning, and every docstring cross-reference resolves."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _build_api():
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_builds_without_warnings(tmp_path):
    out = tmp_path / "api"
    proc = subprocess.run(["bash", str(ROOT / "docs" / "build_api.sh"), str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "problem" not in log and "docs: wrote" in log, log
    # A page for every module (also those a package's __all__ leaves out), docstrings rendered,
    # :class: roles turned into links.
    pages = {str(p.relative_to(out)) for p in out.rglob("*.html")}
    for name in _build_api().module_names():
        assert name.replace(".", "/") + ".html" in pages, name
    run_page = (out / "nerfkit" / "engine" / "run.html").read_text()
    assert "Builds <code>model_cfg</code> for <code>scene</code>" in run_page  # init_state
    assert '<a href="../models.html#ModelConfig">' in run_page


def test_check_refs_reports_a_reference_to_nothing():
    check = _build_api()
    mod = types.ModuleType("fake_module")

    def good():
        """See :func:`nerfkit.load_run`, :class:`~nerfkit.core.rays.Rays` and :func:`other`."""

    def other():
        """Calls :func:`nerfkit.core.no_such_function` and :meth:`Thing.missing`."""

    class Thing:
        """Has :meth:`render`; see :mod:`nerfkit.core.samplers`."""

        def render(self):
            """Like :meth:`Thing.render` and :attr:`value`."""

    for obj in (good, other, Thing):
        obj.__module__ = "fake_module"
        setattr(mod, obj.__name__, obj)
    assert check.broken_references([mod]) == [
        "fake_module.other: :func:`nerfkit.core.no_such_function`",
        "fake_module.other: :meth:`Thing.missing`",
        "fake_module.Thing.render: :attr:`value`",
    ]


def test_markdown_links_point_to_files_that_exist():
    import re
    pages = [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md", ROOT / "examples" / "README.md",
             ROOT / "configs" / "README.md"]
    links = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            links += 1
            assert (page.parent / target).exists(), f"{page.name}: {target}"
    assert links >= 15
    readme = (ROOT / "README.md").read_text()
    assert "nerfkit/configs.py" not in readme
    assert "nerfkit/configs.py" not in (ROOT / "configs" / "README.md").read_text()
    assert "bash docs/build_api.sh" in readme
