"""tests/warm_python.py, which the entry-point tests start their processes with: a warm run must look like
``python ...`` from the outside (exit status, argv, working directory, environment, separate streams, signals)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import warm_python

SCRIPT = """
import os, sys
print("ARGV", sys.argv[1:], "CWD", os.getcwd(), "VAR", os.environ.get("WARM_TEST_VAR"), "MAIN", __name__)
print("to stderr", file=sys.stderr)
import gslrm
sys.exit(int(sys.argv[1]))
"""


@pytest.mark.slow  # starts a Python process
def test_a_warm_run_looks_like_a_cold_one_from_outside(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "WARM_TEST_VAR"} | {"WARM_TEST_VAR": "seen"}
    results = [
        warm_python.run(["-c", SCRIPT, "3", "x y"], cwd=tmp_path, env=env, timeout=120),
        subprocess.run(
            [sys.executable, "-c", SCRIPT, "3", "x y"], cwd=tmp_path, env=env, capture_output=True, text=True
        ),
    ]
    warm, cold = ((result.returncode, result.stdout, result.stderr) for result in results)
    assert warm == cold == (3, f"ARGV ['3', 'x y'] CWD {tmp_path} VAR seen MAIN __main__\n", "to stderr\n")
    assert not [name for name in warm_python.PRELOAD if name.startswith("gslrm")]  # each run imports gslrm itself


@pytest.mark.slow  # starts a Python process
def test_signals_and_sessions_reach_a_warm_run(tmp_path):
    sleeper = ["-c", "import time; print('up', flush=True); time.sleep(60)"]
    process = warm_python.start(sleeper, cwd=tmp_path, env=dict(os.environ), new_session=True)
    deadline = time.monotonic() + 60
    while os.getpgid(process.pid) != process.pid:  # a session (and group) of its own: os.killpg reaches it alone
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    assert process.communicate(timeout=30)[1] == "" and process.returncode == -signal.SIGKILL
    merged = warm_python.start(sleeper, cwd=tmp_path, env=dict(os.environ), merge_stderr=True)
    with pytest.raises(subprocess.TimeoutExpired):
        merged.wait(timeout=0.5)
    merged.terminate()
    assert merged.wait(timeout=30) == -signal.SIGTERM
