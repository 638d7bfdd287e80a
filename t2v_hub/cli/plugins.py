"""`t2v-hub plugins list`: every registered probe adapter and integration, and who provides it.

Plugins come from the entry-point groups ``t2v_hub.probes`` and
``t2v_hub.integrations``; T2V_HUB_DISABLE_PLUGIN_AUTOLOAD=1 turns that discovery off.
"""

from __future__ import annotations

import argparse
import sys

from ._common import add_format_arg, emit, hint, print_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("plugins", help="list probe adapters and integrations", description=__doc__)
    s = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    ls = s.add_parser("list", help="list registered plugins")
    add_format_arg(ls, what="the plugins")
    return p


def run(args: argparse.Namespace) -> int:
    from ..probes.adapters import list_probe_adapters
    from ..registry import autoload_disabled, failed_plugins, list_integrations

    if getattr(args, "plugins_command", None) != "list":
        from ..errors import T2VError

        raise T2VError("choose an action: `t2v-hub plugins list`")
    rows = [("probe-adapter", n, d) for n, d in list_probe_adapters().items()]
    rows += [("integration", n, d) for n, d in list_integrations().items()]
    failed = failed_plugins()
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        print_json({"autoload": not autoload_disabled(),
                    "plugins": [{"kind": k, "name": n, "distribution": d} for k, n, d in rows],
                    "failed": failed})
        return 0
    if autoload_disabled():
        hint("plugin autoload is off (T2V_HUB_DISABLE_PLUGIN_AUTOLOAD): only built-in registrations are shown")
    emit(fmt, ("kind", "name", "distribution"), rows)
    if not rows and fmt == "table":
        sys.stdout.write("(none)\n")
    for name, why in failed.items():
        kind, _, plugin = name.rpartition(" ")
        hint(f"{kind} {plugin!r} failed to load: {why}")
    return 0
