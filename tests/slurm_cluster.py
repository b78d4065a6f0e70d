"""A two-node SLURM cluster for the tests: Debian's munge + slurm-wlm daemons, run as root from a temp dir.

``SlurmCluster(folder).start()`` makes two test hosts (tests/netns_hosts.py: a network namespace each, on a private
bridge, each with its own hostname), writes a key and a ``slurm.conf``, and starts ``munged`` and ``slurmctld`` on
the machine itself (the login node, at the bridge's address) and one ``slurmd`` per host, in the foreground, as
child processes. ``stop()`` cancels the jobs still queued, waits for them, stops exactly those PIDs and removes the
hosts. Clients (sbatch, squeue, scontrol, and submitit calling them) find the cluster through ``SLURM_CONF`` in
:attr:`env`. The project's files are shared by all hosts, as a cluster's shared disk is.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import netns_hosts
from netns_hosts import HostNetwork

from gslrm.view.browser import free_port

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "srun")
# partition -> its nodes. "debug" (the default) takes every job but one; "lost" holds the nodes that a test loses on
# purpose (every process on a lost node is killed, whatever job it belongs to)
PARTITIONS = {"debug": ("node1", "node2"), "lost": ("node3", "node4")}


def why_not_available() -> str | None:
    """The reason a cluster cannot be started here (None: it can)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    return netns_hosts.why_not_available()


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    # the scheduler passes every second and a requeued job is eligible 6 s later (cred_expire + 1): the tests' jobs
    # restart within seconds instead of SLURM's default minute
    def __init__(self, folder: Path, cpus: int = 10, partitions: dict[str, tuple[str, ...]] = PARTITIONS) -> None:
        self.folder = Path(folder)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus  # per node; more than the machine has, so that the concurrent scenarios all fit
        self.partitions = partitions
        self.nodes = [node for nodes in partitions.values() for node in nodes]
        self.network = HostNetwork(self.nodes, self.folder)
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, SLURM_CONF=str(self.folder / "slurm.conf"))

    def _write_config(self) -> None:
        folder = self.folder
        for sub in ("state", "log", "munge", *(f"spool/{node}" for node in self.nodes)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / "munge").chmod(0o700)
        key = folder / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        node_lines = "\n".join(
            f"NodeName={node} NodeAddr={self.network.addresses[node]} CPUs={self.cpus} RealMemory=16000 State=UNKNOWN"
            for node in self.nodes
        )
        partition_lines = "\n".join(
            f"PartitionName={name} Nodes={','.join(nodes)} Default={'YES' if index == 0 else 'NO'} MaxTime=INFINITE "
            "State=UP"
            for index, (name, nodes) in enumerate(self.partitions.items())
        )
        # SlurmdTimeout=10: a lost node is declared down (its jobs NODE_FAIL) within seconds, not SLURM's 5 minutes
        config = f"""
ClusterName=gslrmtest
SlurmctldHost={self.host}({self.network.login_address})
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/socket,cred_expire=5
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool/%n
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd-%n.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd-%n.log
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
SlurmdTimeout=10
{node_lines}
{partition_lines}
"""
        (folder / "slurm.conf").write_text(config)

    def _start(self, name: str, *args: str, host: str | None = None) -> None:
        """A daemon on the login node, or (``host``) as that host; ``slurmd@node1`` in :attr:`processes`."""
        key = name if host is None else f"{name}@{host}"
        log = open(self.folder / "log" / f"{key}.out", "w")  # noqa: SIM115 - closed with the process
        command = [_binary(name), *args]
        if host is not None:
            command = self.network.command(host, *command)
        self.processes[key] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def start_node(self, node: str) -> None:
        self._start("slurmd", "-D", "-N", node, "-f", str(self.folder / "slurm.conf"), host=node)

    def start(self, timeout_s: float = 30.0) -> SlurmCluster:
        self.network.create()
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
        for node in self.nodes:
            self.start_node(node)
        self._wait_for(self._nodes_idle, timeout_s, "the nodes to become idle")
        return self

    def _nodes_idle(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}): {self.log_tail(name.split('@')[0])}")
        return all(state == "idle" for state in self.node_states().values())

    def node_states(self) -> dict[str, str]:
        """Each node's state as ``sinfo`` abbreviates it (idle, alloc, mix, down*, ...)."""
        result = self.run("sinfo", "--noheader", "--Node", "--format=%N %t", check=False)
        return dict(line.split() for line in result.stdout.splitlines() if len(line.split()) == 2)

    def lose_node(self, node: str) -> list[int]:
        """The node is lost: its slurmd and every process it ran are killed at once (SIGKILL), without a word to the
        controller, which finds out by itself (``SlurmdTimeout``). Returns the PIDs killed."""
        slurmd = self.processes.pop(f"slurmd@{node}", None)
        killed = self.network.kill_all(node)
        if slurmd is not None:
            slurmd.wait(timeout=10)
        return killed

    def restore_node(self, node: str, timeout_s: float = 60.0) -> None:
        """A lost node comes back: a new slurmd, and the node back in service (``ReturnToService=2``)."""
        self.start_node(node)
        self.run("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
        deadline = time.monotonic() + timeout_s
        while not self.node_states().get(node, "").rstrip("*").startswith(("idle", "alloc", "mix")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node} not back after {timeout_s} s: {self.node_states()}")
            time.sleep(0.5)

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
        slurmds = [name for name in self.processes if name.startswith("slurmd@")]
        for name in [*slurmds, "slurmctld", "munged"]:  # the reverse of the start order
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.network.remove()
