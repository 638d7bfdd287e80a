"""``t2v-hub`` entry point.

Data goes to stdout, hints and progress to stderr. Every :class:`T2VError` and
every refused flag becomes one line on stderr and exit code 2; anything else is a
bug, reported in one line with exit code 1 (``T2V_HUB_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..errors import T2VError

# (command, module): modules are imported lazily so `t2v-hub --help` stays fast.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("embed", "t2v_hub.cli.embed"),
    ("distance", "t2v_hub.cli.distance"),
    ("attach", "t2v_hub.cli.attach"),
    ("experts", "t2v_hub.cli.experts"),
    ("recommend", "t2v_hub.cli.recommend"),
    ("index", "t2v_hub.cli.index"),
    ("score", "t2v_hub.cli.score"),
    ("trivial", "t2v_hub.cli.trivial"),
    ("selector", "t2v_hub.cli.selector"),
    ("matrix", "t2v_hub.cli.matrix"),
    ("plugins", "t2v_hub.cli.plugins"),
)


class UsageError(Exception):
    """A command line argparse refused; carries the one line to show."""


_SECRET = re.compile(r"(hf_[A-Za-z0-9]{6,}|sk-[A-Za-z0-9]{6,}|[A-Za-z0-9_\-]{32,})")


def _redact(message: str) -> str:
    """argparse's message without anything that could be a secret.

    ``unrecognized arguments: --token hf_...`` echoes values: keep the flags, count the rest.
    """
    head, sep, rest = message.partition("unrecognized arguments: ")
    if sep:
        words = rest.split()
        flags = [w.split("=", 1)[0] for w in words if w.startswith("-")]
        hidden = len(words) - len(flags) + sum("=" in w for w in words if w.startswith("-"))
        message = head + sep + " ".join(flags) + (f" (and {hidden} value(s), not shown)" if hidden else "")
    return _SECRET.sub("<redacted>", message)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: <what> (see t2v-hub <command> --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(f"{_redact(message)} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    parser = Parser(prog="t2v-hub", description="TASK2VEC task embeddings for model hubs and AutoML.")
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


# Options where an empty string means something: --token "" is "no token", as HF_TOKEN="" is to huggingface_hub.
_EMPTY_ALLOWED = {"token"}


def _unusable_value(args: argparse.Namespace) -> tuple[str, bool, str] | None:
    """The first option (or positional) whose string value no command can use, as the user wrote
    it, whether it may be left out, and what is wrong with it.

    An empty or blank value would otherwise read as "not given" (``--trivial ""``: the default
    t0), as the current folder (``--index ""``: "'.' is not an index") or as the Hugging Face Hub
    (``--hub ""``): a silent change of meaning, where one unset shell variable is the cause.
    A NUL byte can be in no path, id, name or token: without this check it ends as
    "ValueError: embedded null byte" from whichever call meets it first.
    """
    parser = getattr(args, "_parser", None)
    for action in getattr(parser, "_actions", []):
        if not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        values = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
        if any("\x00" in v for v in values):
            problem = "contains a NUL byte, which no path, id or name can hold; pass the value without it"
        elif action.dest not in _EMPTY_ALLOWED and any(not v.strip() for v in values) and value != action.default:
            problem = "got an empty value (an unset shell variable?); pass a value"
        else:
            continue
        if action.option_strings:
            return action.option_strings[-1], not action.required, problem
        return str(action.metavar or action.dest), False, problem
    return None


def _one_line_warning(parser: argparse.ArgumentParser | None) -> Callable[..., None]:
    """``warnings.showwarning`` for a command: one line, the library's parameters as ``parser``'s flags."""

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        from .flags import to_cli

        print(f"warning: {to_cli(' '.join(str(message).split()), parser)}", file=sys.stderr)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    unusable = _unusable_value(args)
    if unusable:
        name, optional, problem = unusable
        drop = f", or drop {name}" if optional else ""
        print(f"error: argument {name}: {problem}{drop} (see {args._parser.prog} --help)", file=sys.stderr)
        return 2
    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_DISABLE_PROGRESS_BARS", "T2V_HUB_QUIET", "HF_HUB_VERBOSITY",
                                                "DATASETS_VERBOSITY")}
    if getattr(args, "quiet", False):
        # --quiet means quiet: no retry or progress lines from the libraries underneath either,
        # nor hints from t2v-hub's own library code (t0's "computing..."); restored afterwards.
        # The *_VERBOSITY variables matter because those libraries are imported lazily, after
        # this point, and set their loggers' levels from them when they are.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("T2V_HUB_QUIET", "1")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("DATASETS_VERBOSITY", "error")
        # datasets' own bars ("Generating train split") follow T2V_HUB_QUIET where the data layer
        # loads (data.sources._quiet_bars): its env switch would outlive the command in this process.
        import logging

        for name in ("huggingface_hub", "datasets", "timm"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return _run(args)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Terminated(BaseException):
    """SIGTERM (``kill``, ``timeout``, a scheduler) raised in the main thread, so that cleanups run."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _run(args: argparse.Namespace) -> int:
    import signal

    # Python's default for SIGTERM ends the process on the spot: temporary files of an atomic write or a
    # half-built index folder would stay. As an exception, every `finally` and cleanup runs first (like ^C).
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return _run_command(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run_command(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings():
            # Our own warnings are hints for the user: one line on stderr, no source line.
            warnings.showwarning = _one_line_warning(getattr(args, "_parser", None))
            return int(args._run(args) or 0)
    except T2VError as exc:
        from .flags import to_cli

        # One line, whatever a wrapped library put in the message (torch.load's is a page long).
        one_line = " ".join(str(exc).split())
        print(f"error: {to_cli(one_line, getattr(args, '_parser', None))}", file=sys.stderr)
        return exc.exit_code
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `t2v-hub ... | head`: stdout closed early is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # The machine refused something no check above named (a full disk, a dead mount, a file
        # that vanished mid-run): not a bug of t2v-hub, so no "unexpected"; the path says where.
        if _debug():
            raise
        from ._common import short_path

        where = f" ({short_path(str(exc.filename))})" if exc.filename else ""
        print(f"error: {_redact(' '.join(str(exc.strerror or exc).split()))}{where}; check that path, the free space "
              "and the permissions, then run again", file=sys.stderr)
        return 2
    except Exception as exc:  # the last line of defence: a bug, or a failure nothing named
        if _debug():
            raise
        what = " ".join(str(exc).split())[:300] or type(exc).__name__
        print(f"error: unexpected {type(exc).__name__}: {_redact(what)} (run with T2V_HUB_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def _debug() -> bool:
    return os.environ.get("T2V_HUB_DEBUG", "").lower() in {"1", "true", "yes"}


if __name__ == "__main__":  # `python -m t2v_hub.cli.main` and `accelerate launch -m t2v_hub.cli.main`
    sys.exit(main())
