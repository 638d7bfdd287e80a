"""Every third-party module t2v_hub imports is a declared core dependency, or an extra's module
imported only where that extra is optional (plots, the numba kernel), or the HTTP client of
huggingface_hub's own API. `selector eval` imported scipy, which only the plots/dev extras named."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> distribution name, where they differ
DIST = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
# Optional by design: imported lazily, only by the module that needs the extra.
OPTIONAL = {"matplotlib": {"t2v_hub/plots.py"}, "sklearn": {"t2v_hub/plots.py"},
            "numba": {"t2v_hub/selection/kernels/_numba.py"}}
# huggingface_hub's own HTTP client: its exceptions are what hf_hub raises, pinned by hf_hub's version.
VIA = {"httpx2": "huggingface_hub"}


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for p in (ROOT / "t2v_hub").rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else (
                [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "t2v_hub":
                    found.setdefault(top, set()).add(str(p.relative_to(ROOT)))
    return found


def test_every_import_is_declared() -> None:
    import pytest

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    core = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}
    undeclared = {}
    for top, where in _imports().items():
        dist = DIST.get(top, top).lower().replace("_", "-")
        if dist in core or (top in OPTIONAL and where <= OPTIONAL[top]):
            continue
        if top in VIA and VIA[top].replace("_", "-") in core:
            continue
        undeclared[top] = sorted(where)
    assert not undeclared, f"imported but not a core dependency: {undeclared}"
