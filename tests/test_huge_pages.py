"""glibc huge pages for XLA:CPU's buffers: ``nerfkit.xla_flags.use_huge_pages`` re-executes the
process with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` where that applies, and the ``nerfkit``
command does so before anything else."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nerfkit import xla_flags

TUNABLE = "glibc.malloc.hugetlb=1"


@pytest.fixture
def thp(tmp_path, monkeypatch):
    """A fake ``/sys/kernel/mm/transparent_hugepage/enabled`` and a glibc Linux."""
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    monkeypatch.setattr(xla_flags, "_THP_ENABLED", f)
    monkeypatch.setattr(xla_flags.sys, "platform", "linux")
    monkeypatch.setattr(xla_flags.platform, "libc_ver", lambda: ("glibc", "2.36"))
    return f


def test_environment_adds_the_tunable_and_keeps_the_others(thp):
    assert xla_flags.huge_pages_environment({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": TUNABLE}
    env = xla_flags.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=10"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.tcache_count=10:{TUNABLE}"}


def test_environment_leaves_alone_where_it_does_not_apply(thp, monkeypatch):
    # Already set (either way): the user's choice stands; and no re-execution loop.
    assert xla_flags.huge_pages_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None
    assert xla_flags.huge_pages_environment({"GLIBC_TUNABLES": TUNABLE}) is None
    assert xla_flags.huge_pages_environment({"NERFKIT_NO_HUGE_PAGES": "1"}) is None
    thp.write_text("always madvise [never]\n")
    assert xla_flags.huge_pages_environment({}) is None
    thp.unlink()  # no transparent huge pages in this kernel
    assert xla_flags.huge_pages_environment({}) is None
    thp.write_text("[always] madvise never\n")
    assert xla_flags.huge_pages_environment({}) is not None
    monkeypatch.setattr(xla_flags.platform, "libc_ver", lambda: ("", ""))  # musl
    assert xla_flags.huge_pages_environment({}) is None
    monkeypatch.setattr(xla_flags.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(xla_flags.sys, "platform", "darwin")
    assert xla_flags.huge_pages_environment({}) is None


# This environment without the two variables: what the children below start from.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("GLIBC_TUNABLES", "NERFKIT_NO_HUGE_PAGES")}
EXPECTED = TUNABLE if xla_flags.huge_pages_environment(CLEAN_ENV) is not None else "None"


def _run(code: str, *args: str, **env: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code, *args], env={**CLEAN_ENV, **env},
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return out.splitlines()


def test_use_huge_pages_reexecutes_once_with_the_same_arguments():
    """The process runs again from the start with the tunable (once: the second start finds it
    set) and its own arguments; opting out leaves the environment as it was."""
    code = ("import os, sys; print('start', flush=True); from nerfkit import xla_flags; "
            "xla_flags.use_huge_pages(); print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
    lines = _run(code, "a", "b c")
    if EXPECTED == "None":  # this machine has no glibc / no transparent huge pages
        assert lines == ["start", "None ['a', 'b c']"]
    else:
        assert lines == ["start", "start", f"{TUNABLE} ['a', 'b c']"]
    assert _run(code, "a", NERFKIT_NO_HUGE_PAGES="1") == ["start", "None ['a']"]


def test_the_nerfkit_command_applies_it_before_main():
    code = ("import os, nerfkit.cli as cli; "
            "cli.main = lambda: print(os.environ.get('GLIBC_TUNABLES')) or 0; cli.entrypoint()")
    assert _run(code) == [EXPECTED]


def test_the_console_script_and_python_m_restart_before_importing_jax():
    """``nerfkit`` (``nerfkit.__main__:main``) and ``python -m nerfkit.cli`` restart before the
    CLI's imports (JAX: ~2 s that a restart after them would spend twice)."""
    import tomllib
    from pathlib import Path
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["nerfkit"] == "nerfkit.__main__:main"
    code = ("import os, sys; print('jax' in sys.modules, flush=True); import nerfkit.cli as cli; "
            "cli.entrypoint = lambda: print(os.environ.get('GLIBC_TUNABLES')); "
            "import nerfkit.__main__ as m; m.main()")
    lines = _run(code)
    assert lines[-1] == EXPECTED and lines.count("False") == (2 if EXPECTED != "None" else 1)
    # python -m nerfkit.cli: the module restarts at its top, before it imports JAX.
    probe = ("import sys, runpy; sys.argv = ['nerfkit.cli', '--help']; "
             "import nerfkit.xla_flags as x; "
             "x.use_huge_pages = lambda: (print('jax loaded:', 'jax' in sys.modules), "
             "sys.exit(0)); runpy.run_module('nerfkit.cli', run_name='__main__')")
    assert _run(probe) == ["jax loaded: False"]
