"""Test hosts on one machine: network namespaces on a private bridge, for a SLURM cluster of several nodes.

``HostNetwork(["node1", "node2"], folder).create()`` makes a bridge in the machine's own namespace (its address is
the "login node": the controller and the test's client commands live there), and for each host a network namespace
joined to the bridge by a veth pair, with its own address in a private /24 that no route of the machine uses.
:meth:`command` runs a program as a host: in its network namespace, with its own hostname (a UTS namespace) and a
hosts file naming every host bind-mounted over /etc/hosts (a private mount namespace). So a process on node2 sees
``hostname`` = node2, as on a real node, and DDP's rendezvous resolves node names as SLURM hands them out.

Everything else of the file system is shared, as a cluster's shared disk is. Traffic stays on the bridge: no host
has a route beyond the /24. ``remove()`` deletes exactly the namespaces and links that ``create()`` made.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
from pathlib import Path


def why_not_available() -> str | None:
    """The reason namespaces cannot be made here (None: they can)."""
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install -y iproute2 util-linux)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200-254.x that neither an address nor a route of this machine touches."""
    taken = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    taken += subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    used = [ipaddress.ip_network(word, strict=False) for word in taken.split() if "/" in word and word[0].isdigit()]
    candidates = [ipaddress.ip_network(f"10.{a}.{b}.0/24") for a in range(200, 255) for b in range(256)]
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise RuntimeError("no free private /24 for the test hosts")


class HostNetwork:
    def __init__(self, hosts: list[str], folder: Path) -> None:
        tag = f"{os.getpid() % 100000:05d}{random.randrange(100):02d}"  # link names: 15 characters at most
        self.tag = tag
        self.hosts = list(hosts)
        self.bridge = f"gsbr{tag}"
        self.namespaces = {host: f"gslrm-{tag}-{host}" for host in self.hosts}
        self.links = {host: f"gsv{index}{tag}" for index, host in enumerate(self.hosts)}
        self.login_host = socket.gethostname().split(".")[0]
        self.subnet: ipaddress.IPv4Network | None = None
        self.addresses: dict[str, str] = {}
        self.hosts_file = Path(folder) / "hosts"
        self.made: list[tuple[str, str]] = []  # ("netns" | "link", name), in creation order

    @property
    def login_address(self) -> str:
        return self.addresses[self.login_host]

    def create(self) -> HostNetwork:
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def _create(self) -> None:
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        prefix = self.subnet.prefixlen
        self.addresses = {self.login_host: str(hosts[0])}
        self.addresses |= {
            host: str(hosts[9 + index]) for index, host in enumerate(self.hosts, start=1)
        }  # .11, .12, ...
        _ip("link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        _ip("addr", "add", f"{self.login_address}/{prefix}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        names = "\n".join(f"{address} {host}" for host, address in self.addresses.items())
        self.hosts_file.write_text(f"127.0.0.1 localhost\n{names}\n")
        for host in self.hosts:
            namespace, link = self.namespaces[host], self.links[host]
            _ip("netns", "add", namespace)
            self.made.append(("netns", namespace))
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            self.made.append(("link", link))
            _ip("link", "set", link, "master", self.bridge, "up")
            inside = ("netns", "exec", namespace, "ip")
            _ip(*inside, "addr", "add", f"{self.addresses[host]}/{prefix}", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")
            _ip(*inside, "link", "set", "lo", "up")

    def command(self, host: str, *argv: str) -> list[str]:
        """``argv`` run as ``host``: in its network namespace, with its own hostname and /etc/hosts. Every step execs
        the next, so the PID of the Popen is the PID of ``argv[0]``. (Not ``ip netns exec``: it mounts a new /sys,
        without the cgroup file system slurmd needs.)"""
        script = 'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"'
        namespace = ["nsenter", f"--net=/run/netns/{self.namespaces[host]}", "unshare", "--uts", "--mount"]
        return [*namespace, "sh", "-c", script, host, str(self.hosts_file), *argv]

    def pids(self, host: str) -> list[int]:
        result = subprocess.run(["ip", "netns", "pids", self.namespaces[host]], capture_output=True, text=True)
        return [int(pid) for pid in result.stdout.split()]

    def kill_all(self, host: str) -> list[int]:
        """SIGKILL every process of ``host`` (a node lost): they were all started in its namespace by the test."""
        killed = []
        for pid in self.pids(host):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        return killed

    def remove(self) -> None:
        """Delete what :meth:`create` made, newest first. A namespace's end of a veth pair goes with it."""
        for kind, name in reversed(self.made):
            if kind == "netns":
                self.kill_all(next(host for host, ns in self.namespaces.items() if ns == name))
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
            elif kind == "link":
                subprocess.run(["ip", "link", "del", name], capture_output=True)  # gone already with its peer: fine
        self.made.clear()
