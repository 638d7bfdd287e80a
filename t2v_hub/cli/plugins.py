"""`t2v-hub plugins list`: every registered probe adapter and integration, and who provides it.

Plugins come from the entry-point groups ``t2v_hub.probes`` and
``t2v_hub.integrations``; T2V_HUB_DISABLE_PLUGIN_AUTOLOAD=1 turns that discovery off.
"""

from __future__ import annotations

import argparse
import sys

from ._common import hint, print_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("plugins", help="list probe adapters and integrations", description=__doc__)
    s = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    ls = s.add_parser("list", help="list registered plugins")
    ls.add_argument("--format", choices=("table", "json"), default="table")
    return p


def run(args: argparse.Namespace) -> int:
    from ..plugins_registry import autoload_disabled, failed_integrations, list_integrations
    from ..probes.adapters import list_probe_adapters

    if getattr(args, "plugins_command", None) != "list":
        from ..errors import T2VError

        raise T2VError("choose an action: `t2v-hub plugins list`")
    rows = [("probe-adapter", n, d) for n, d in list_probe_adapters().items()]
    rows += [("integration", n, d) for n, d in list_integrations().items()]
    failed = failed_integrations()
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        print_json({"autoload": not autoload_disabled(),
                    "plugins": [{"kind": k, "name": n, "distribution": d} for k, n, d in rows],
                    "failed": failed})
        return 0
    if autoload_disabled():
        hint("plugin autoload is off (T2V_HUB_DISABLE_PLUGIN_AUTOLOAD): only built-in registrations are shown")
    head = ("kind", "name", "distribution")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    w = sys.stdout
    w.write("  ".join(h.ljust(x) for h, x in zip(head, widths, strict=True)).rstrip() + "\n")
    for r in rows:
        w.write("  ".join(c.ljust(x) for c, x in zip(r, widths, strict=True)).rstrip() + "\n")
    if not rows:
        w.write("(none)\n")
    for name, why in failed.items():
        hint(f"integration {name!r} failed to load: {why}")
    return 0
