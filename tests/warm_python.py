"""``python <script> args`` for the tests, without paying the interpreter's cold start each time.

A cold Python spends about 8 CPU seconds importing torch, Lightning (which imports torchmetrics, torchvision's models
and torch._dynamo) and Hydra before an entry point runs a line of its own; the suite starts some 40 of them. Here each
run is a process forked from a server (multiprocessing's forkserver) that has imported those third-party packages once: it
gets its own pid, working directory, environment, stdout/stderr and exit status, then runs the script as ``__main__``
through runpy, so gslrm itself is imported fresh in every run; signals (SIGTERM, kill -9 of its session) reach it
as they reach any process. The processes it starts (DDP ranks, SLURM jobs) are cold. ``GSLRM_TEST_COLD=1`` runs
every one of them as a plain ``subprocess``.

The server imports nothing of gslrm and starts no Python thread; numpy's and scipy's OpenBLAS start native pools,
which OpenBLAS rebuilds after a fork, as DataLoader's forked workers rely on. It is started once per pytest process,
with the environment of the test process: a variable read at import time by a preloaded package keeps that value
(the suite varies none of them; HF_HOME, TORCH_HOME, GSLRM_* and CXX are read when used).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import threading

# third-party only: gslrm is what the runs test, so each run imports it itself
PRELOAD = ["torch", "torchvision", "torchmetrics", "lightning", "hydra", "omegaconf", "scipy.signal", "einops"]
COLD = os.environ.get("GSLRM_TEST_COLD") == "1"

_context: multiprocessing.context.ForkServerContext | None = None
_context_lock = threading.Lock()  # the SLURM scenarios start runs from several threads


def _server() -> multiprocessing.context.ForkServerContext:
    global _context
    with _context_lock:
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(PRELOAD)
        return _context


def _run_as_main(argv: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str, new_session: bool) -> None:
    """In the forked child: become ``python *argv`` run in ``cwd`` with ``env`` and stdio on the two files (one file
    for both: stderr=STDOUT), in a session of its own if asked (Popen's ``start_new_session``, for ``os.killpg``)."""
    if new_session:
        os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    out = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = out if stderr == stdout else os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    if err != out:
        os.close(err)
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, cwd)
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, "")
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    finally:
        # multiprocessing ends its children with os._exit, which skips atexit: run the handlers an interpreter
        # runs at exit (logging's flush, wandb's finish, ...)
        atexit._run_exitfuncs()


class WarmProcess:
    """A started run: ``pid``, ``returncode``, ``poll()``, ``wait(timeout)``, ``send_signal()``, ``terminate()``,
    ``kill()`` and ``communicate(timeout)`` as subprocess.Popen has them. Without ``output`` its stdout and stderr are
    read as text once it has ended (``merge_stderr``: both in the first, as with ``stderr=STDOUT``); with ``output``
    both go to that file and ``communicate`` gives ``(None, None)``."""

    def __init__(self, argv: list[str], cwd, env: dict[str, str], output=None, merge_stderr=False, new_session=False):
        self.args = [sys.executable, *argv]
        self._folder = None
        if output is None:
            self._folder = tempfile.TemporaryDirectory(prefix="warm_python_")
            streams = tuple(os.path.join(self._folder.name, name) for name in ("stdout", "stderr"))
            if merge_stderr:
                streams = (streams[0], streams[0])
        else:
            streams = (str(output), str(output))
        for path in set(streams):  # there to read even if the child dies before it opens them
            open(path, "w").close()
        self._streams = streams
        self._merged = streams[0] == streams[1]
        arguments = (list(argv), str(cwd or os.getcwd()), dict(env), *streams, new_session)
        self._process = _server().Process(target=_run_as_main, args=arguments)
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def send_signal(self, number: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        self.wait(timeout)
        if self._folder is None:
            return None, None
        with open(self._streams[0]) as stdout, open(self._streams[1]) as stderr:
            output = stdout.read(), None if self._merged else stderr.read()
        self._folder.cleanup()
        return output


def start(
    argv: list[str], *, env: dict[str, str], cwd=None, output=None, merge_stderr=False, new_session=False
) -> WarmProcess | subprocess.Popen:
    """Like ``subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True,
    start_new_session=new_session)``; ``merge_stderr``: ``stderr=STDOUT``; ``output`` (a path):
    ``stdout=open(output, "w"), stderr=STDOUT``."""
    if COLD:
        command, pipe = [sys.executable, *argv], subprocess.PIPE
        options = {"cwd": cwd, "env": env, "start_new_session": new_session}
        if output is None:
            stderr = subprocess.STDOUT if merge_stderr else pipe
            return subprocess.Popen(command, stdout=pipe, stderr=stderr, text=True, **options)
        with open(output, "w") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)
    return WarmProcess(argv, cwd, env, output, merge_stderr, new_session)


def run(argv: list[str], *, env: dict[str, str], cwd=None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)``: on a timeout the process is killed."""
    process = start(argv, cwd=cwd, env=env)
    try:
        stdout, stderr = process.communicate(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
