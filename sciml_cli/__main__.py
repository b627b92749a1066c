"""``sciml <command> [overrides]``: a small dispatcher to one Hydra app per command.

Listing the commands imports neither torch nor Hydra, so ``sciml --help`` answers at once.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "train": "train a model on a problem (model=, problem=, optim=, trainer=, experiment=)",
    "eval": "evaluate a run directory's checkpoint against the problem's reference",
    "solve": "run a problem's reference solver and write an HDF5 dataset and a plot",
    "sweep": "Hydra multirun of train over comma-separated values, with a ranked summary",
}


def usage() -> str:
    from . import __version__

    lines = [f"sciml {__version__}: an experiment runner for scientific machine learning", "",
             "usage: sciml <command> [group=option ...] [key=value ...] [hydra flags]", "", "commands:"]
    lines += [f"  {name:<7}{text}" for name, text in COMMANDS.items()]
    lines += ["", "`sciml <command> --help` lists a command's config groups and options."]
    return "\n".join(lines)


def _complete() -> int:
    """Hydra's bash completion calls ``sciml -sc query=bash`` with the whole line in COMP_LINE:
    hand it to the command's app with the command word removed."""
    words = os.environ.get("COMP_LINE", "").split()
    if len(words) >= 2 and words[1] in COMMANDS and (len(words) > 2 or os.environ["COMP_LINE"].endswith(" ")):
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (" " if os.environ["COMP_LINE"].endswith(" ") else "")
        module = importlib.import_module(f"sciml_cli.commands.{words[1]}")
        return module.main(sys.argv[1:])
    prefix = words[1] if len(words) == 2 and not os.environ["COMP_LINE"].endswith(" ") else ""
    print(" ".join(c for c in COMMANDS if c.startswith(prefix)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-sc", "--shell-completion") and "COMP_LINE" in os.environ:
        return _complete()
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] == "--version":
        from . import __version__

        print(f"sciml {__version__}")
        return 0
    command = args[0]
    if command not in COMMANDS:
        import difflib

        near = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        sys.stderr.write(f"sciml: unknown command {command!r}{hint} (valid: {', '.join(COMMANDS)})\n")
        return 2
    from .errors import Stopped, report, stop_early

    stop_early()
    try:
        module = importlib.import_module(f"sciml_cli.commands.{command}")
        return module.main(args[1:])
    except Stopped as err:  # before the command could report it itself
        return report(err)


if __name__ == "__main__":
    sys.exit(main())
