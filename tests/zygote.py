"""A preloaded Python that forks one ``python -m sciml_cli ...`` per request, for the tests.

Most of a CLI test's ``sciml`` call is the interpreter importing torch and Hydra (1.5 of its 2 s
for a config error). This server imports them (not sciml's own modules) once; each request then
forks a child that becomes that command: it takes the request's working directory, environment,
umask and arguments, gets fresh stdin/stdout/stderr (``/dev/null`` and two files), reseeds
numpy's global generator (Python's ``random`` reseeds itself at a fork; torch's default
generator starts from the same constant seed as in any fresh process, since nothing here drew
from it), and runs the package as ``-m`` does. It exits the way a fresh ``python -m sciml_cli``
would: its own exit code, its ``atexit`` handlers, an uncaught exception as a traceback and 1, a
signal as the signal.

Nothing of a command runs before the fork: no torch operation (so no OpenMP thread pool to lose
in the child), no Hydra initialisation, no threads (checked). Whatever the imports print would
show in every command's output in a fresh process, so the conftest falls back to fresh
processes when the preload printed anything (the one-line tests then see it).

Protocol on two pipes (their descriptors are the arguments): the server writes ``ready``, then
for each JSON request line (argv, cwd, env, umask, stdout, stderr) one line with the child's
pid and, once it has ended, one with its return code (``-N`` for signal N, as ``subprocess``).
"""

from __future__ import annotations

import json
import os
import sys


def preload() -> None:
    """The third-party libraries, which are where the time goes; sciml's own modules are left to
    each command, so a missing or order-dependent import of ours fails as it would for a user."""
    import threading

    import h5py  # noqa: F401
    import hydra  # noqa: F401
    import hydra.compose  # noqa: F401
    import numpy  # noqa: F401
    import omegaconf  # noqa: F401
    import rich.console  # noqa: F401
    import rich.progress  # noqa: F401
    import rich.table  # noqa: F401
    import torch

    tasks = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threading.active_count() != 1 or tasks != 1 or torch.cuda.is_initialized():
        raise RuntimeError(f"the preload started threads ({tasks} tasks) or CUDA; a fork would lose them")


def serve(requests, replies) -> dict:
    """Fork a child per request; the child returns its request, the server never returns."""
    replies.write("ready\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            return request
        replies.write(json.dumps({"pid": pid}) + "\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()
    sys.exit(0)


def become(request: dict) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):  # first: any failure below shows there
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, fd)
        os.close(out)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(request["umask"])
    import numpy

    numpy.random.seed()
    import runpy

    import sciml_cli

    # as `python -m sciml_cli` in that directory: argv[0] the module's file, the directory first on the path
    sys.argv = [str(os.path.join(sciml_cli.__path__[0], "__main__.py")), *request["argv"]]
    sys.path[0] = os.getcwd()
    runpy.run_module("sciml_cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    requests, replies = os.fdopen(int(sys.argv[1]), "r"), os.fdopen(int(sys.argv[2]), "w")
    preload()
    become(serve(requests, replies))
