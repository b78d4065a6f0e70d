"""``python <script> args`` for the tests, without paying the interpreter's cold start each time.

A cold Python spends about 8 CPU seconds importing torch, Lightning (which imports torchmetrics, torchvision's models and
torch._dynamo) and Hydra before an entry point runs a line of its own; the suite starts some 40 of them. Here each run is
a process forked from a server (multiprocessing's forkserver) that has imported those third-party packages once: it
gets its own pid, working directory, environment, stdout/stderr and exit status, then runs the script as ``__main__``
through runpy, so gslrm itself is imported fresh in every run. Tests that signal or kill the process, or time its
start, keep real ``subprocess`` runs; so does every run under ``GSLRM_TEST_COLD=1``.

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
import subprocess
import sys
import tempfile

# third-party only: gslrm is what the runs test, so each run imports it itself
PRELOAD = ["torch", "torchvision", "torchmetrics", "lightning", "hydra", "omegaconf", "scipy.signal", "einops"]
COLD = os.environ.get("GSLRM_TEST_COLD") == "1"

_context: multiprocessing.context.ForkServerContext | None = None


def _server() -> multiprocessing.context.ForkServerContext:
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _run_as_main(argv: list[str], cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """In the forked child: become ``python *argv`` run in ``cwd`` with ``env`` and stdio on the two files."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
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
    """A started run: ``pid``, ``poll()``, ``kill()`` and ``communicate(timeout)`` as subprocess.Popen has them (text
    output, read once it has ended)."""

    def __init__(self, argv: list[str], cwd, env: dict[str, str]):
        self.args = [sys.executable, *argv]
        self._folder = tempfile.TemporaryDirectory(prefix="warm_python_")
        self._out, self._err = (os.path.join(self._folder.name, name) for name in ("stdout", "stderr"))
        for path in (self._out, self._err):  # there to read even if the child dies before it opens them
            open(path, "w").close()
        self._process = _server().Process(
            target=_run_as_main, args=(list(argv), str(cwd), dict(env), self._out, self._err)
        )
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        with open(self._out) as stdout, open(self._err) as stderr:
            output = stdout.read(), stderr.read()
        self._folder.cleanup()
        return output


def start(argv: list[str], *, cwd, env: dict[str, str]) -> WarmProcess | subprocess.Popen:
    """Like ``subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=PIPE, stderr=PIPE, text=True)``."""
    if COLD:
        pipe = subprocess.PIPE
        return subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True)
    return WarmProcess(argv, cwd, env)


def run(argv: list[str], *, cwd, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
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
