"""A one-node SLURM cluster for the tests: Debian's munge + slurm-wlm daemons, run as root from a temp dir.

``SlurmCluster(folder).start()`` writes a key, a ``slurm.conf`` for this host and starts ``munged``, ``slurmctld``
and ``slurmd`` in the foreground as child processes; ``stop()`` cancels the jobs still queued, waits for them, and
stops exactly those three PIDs. Clients (sbatch, squeue, scontrol, and submitit calling them) find the cluster
through ``SLURM_CONF`` in :attr:`env`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from gslrm.view.browser import free_port

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "srun")


def why_not_available() -> str | None:
    """The reason a cluster cannot be started here (None: it can)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    # the scheduler passes every second and a requeued job is eligible 6 s later (cred_expire + 1): the tests' jobs
    # restart within seconds instead of SLURM's default minute
    def __init__(self, folder: Path, cpus: int = 10) -> None:
        self.folder = Path(folder)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.folder / "slurm.conf"))

    def _write_config(self) -> None:
        folder = self.folder
        for sub in ("state", "spool", "log", "munge"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)
        key = folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        config = f"""
ClusterName=gslrmtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/socket,cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=3600
SlurmdParameters=config_overrides
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        (folder / "slurm.conf").write_text(config)

    def _start(self, name: str, *args: str) -> None:
        log = open(self.folder / "log" / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [_binary(name), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def start(self, timeout_s: float = 30.0) -> SlurmCluster:
        self._write_config()
        folder = self.folder
        self._start(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={folder}/munge/munge.key",
            f"--socket={folder}/munge/socket",
            f"--pid-file={folder}/munge/munged.pid",
            f"--log-file={folder}/log/munged.log",
            f"--seed-file={folder}/munge/seed",
        )
        self._wait_for(lambda: (folder / "munge" / "socket").exists(), timeout_s, "munged's socket")
        self._start("slurmctld", "-D", "-f", str(folder / "slurm.conf"))
        self._start("slurmd", "-D", "-f", str(folder / "slurm.conf"))
        self._wait_for(self._node_idle, timeout_s, "the node to become idle")
        return self

    def _node_idle(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): {self.log_tail(name)}")
        result = self.run("sinfo", "--noheader", "--format=%t", check=False)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def _wait_for(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 20) -> str:
        texts = [p.read_text(errors="replace") for p in (self.folder / "log").glob(f"{name}*") if p.is_file()]
        return "\n".join("\n".join(text.splitlines()[-lines:]) for text in texts)

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=timeout)

    def jobs(self) -> list[str]:
        """Ids of the jobs SLURM still holds (pending, running, requeued)."""
        result = self.run("squeue", "--noheader", "--format=%i", check=False)
        return result.stdout.split()

    def wait_until_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.jobs():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def stop(self) -> None:
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            self.run("scancel", "--user=root", check=False)
            self.wait_until_empty(30)
        for name in ("slurmd", "slurmctld", "munged"):  # the reverse of the start order
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
