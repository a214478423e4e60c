"""Builds nerfkit's API reference from its docstrings with pdoc, strictly.

Every module of the package gets a page (pdoc alone lists only the submodules that a package's
``__all__`` names). The build fails on any warning pdoc raises (an annotation it cannot resolve,
a docstring it cannot parse) and on any docstring cross-reference that points nowhere: pdoc turns
``:func:`name``` (and ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``, ``:exc:``,
``:obj:``) into a link when it finds the target and into plain code, silently, when it does not.
Here a reference resolves as a reader would resolve it: a dotted path from an importable module,
or a name relative to the enclosing class or module (a leading ``~`` only shortens the text).

    bash docs/build_api.sh [OUT_DIR]          # the one command (default OUT_DIR: docs/api)
    python docs/build_api.py [OUT_DIR]        # the same, with nerfkit importable
"""

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Iterator, Optional

ROLE = re.compile(r":(func|class|mod|meth|data|attr|exc|obj):`~?([\w.]+)`")


def module_names(package: str = "nerfkit") -> list[str]:
    """The package and every submodule, sorted (``__main__`` modules left out)."""
    root = importlib.import_module(package)
    return [package, *sorted(m.name for m in pkgutil.walk_packages(root.__path__, package + ".")
                             if not m.name.endswith("__main__"))]


def _getattr_path(obj: object, parts: list[str]) -> bool:
    try:
        for p in parts:
            obj = getattr(obj, p)
    except AttributeError:
        return False
    return True


def resolves(target: str, module: types.ModuleType, cls: Optional[type] = None) -> bool:
    """Whether ``target`` names an object: absolute (``pkg.mod.name``), or relative to ``cls``
    or ``module``."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            base = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        if _getattr_path(base, parts[i:]):
            return True
    return any(_getattr_path(base, parts) for base in (cls, module) if base is not None)


def docstrings(module: types.ModuleType) -> Iterator[tuple[str, Optional[type], str]]:
    """``(where, enclosing class, docstring)`` for the module and each function, class, method
    and property it defines."""
    yield module.__name__, None, module.__doc__ or ""
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", None, obj.__doc__ or ""
        elif inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj, obj.__doc__ or ""
            for attr, member in vars(obj).items():
                fn = member.fget if isinstance(member, property) else getattr(
                    member, "__func__", member)
                if inspect.isfunction(fn):
                    yield f"{module.__name__}.{name}.{attr}", obj, fn.__doc__ or ""


def broken_references(modules) -> list[str]:
    """``"where: reference"`` for each cross-reference in ``modules``' docstrings that resolves
    to nothing."""
    bad = []
    for module in modules:
        for where, cls, doc in docstrings(module):
            bad += [f"{where}: {m.group(0)}" for m in ROLE.finditer(doc)
                    if not resolves(m.group(2), module, cls)]
    return bad


def pdoc_specs(names: list[str]) -> list[str]:
    """The fewest module specs that make pdoc document every module in ``names`` once (a spec
    brings the submodules its package exports; naming one twice is a pdoc warning)."""
    from pdoc.extract import walk_packages2
    covered: set[str] = set()
    specs = []
    for name in names:
        if name in covered:
            continue
        is_pkg = hasattr(importlib.import_module(name), "__path__")
        covered.update(m.name for m in walk_packages2([pkgutil.ModuleInfo(None, name, is_pkg)]))
        specs.append(name)
    return specs


def build(out: Path) -> list[str]:
    """Writes the reference to ``out``; returns the problems (empty when the build is clean)."""
    import pdoc
    import pdoc.render
    names = module_names()
    problems = [f"broken reference in {b}" for b in
                broken_references(importlib.import_module(n) for n in names)]
    pdoc.render.configure(docformat="restructuredtext", footer_text="nerfkit API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*pdoc_specs(names), output_directory=Path(out))
    problems += [f"pdoc: {w.message}" for w in caught]
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", type=Path,
                    default=Path(__file__).resolve().parent / "api")
    args = ap.parse_args()
    problems = build(args.out)
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} problem(s) above; fix the docstrings or annotations they "
              "name", file=sys.stderr)
        return 1
    print(f"docs: wrote {args.out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
