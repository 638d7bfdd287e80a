"""``t2v-hub`` entry point.

Data goes to stdout, hints and progress to stderr. Every :class:`T2VError` becomes
one line on stderr and a non-zero exit code; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from ..errors import T2VError

# (command, module): modules are imported lazily so `t2v-hub --help` stays fast.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("embed", "t2v_hub.cli.embed"),
    ("distance", "t2v_hub.cli.distance"),
    ("attach", "t2v_hub.cli.attach"),
    ("experts", "t2v_hub.cli.experts"),
    ("recommend", "t2v_hub.cli.recommend"),
    ("index", "t2v_hub.cli.index"),
    ("selector", "t2v_hub.cli.selector"),
    ("matrix", "t2v_hub.cli.matrix"),
    ("plugins", "t2v_hub.cli.plugins"),
)


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(prog="t2v-hub", description="TASK2VEC task embeddings for model hubs and AutoML.")
    parser.add_argument("--version", action="version", version=f"t2v-hub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(_parser=parser)
    for _name, module_name in COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # command not shipped in this build
                continue
            raise
        p = module.register(sub)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            # Our own warnings are hints for the user: one line on stderr, no source line.
            warnings.showwarning = _one_line_warning
            return int(args._run(args) or 0)
    except T2VError as exc:
        from .flags import to_cli

        print(f"error: {to_cli(str(exc), getattr(args, '_parser', None))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `t2v-hub ... | head`: stdout closed early is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # `python -m t2v_hub.cli.main` and `accelerate launch -m t2v_hub.cli.main`
    sys.exit(main())
