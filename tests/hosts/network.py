"""Test hosts as Linux network namespaces (needs root and iproute2).

One bridge lives in the services host's namespace; every other host (and the test process,
from the root namespace, as an admin host) joins it through a veth pair, all in one /24.
A host's link is cut with `ip link set eth0 down` inside its namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"sgprobe{secrets.token_hex(3)}"
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as error:
        return f"cannot create a network namespace: {error.stderr.strip()}"
    ip("netns", "del", name)
    return None


@dataclass
class Network:
    """Hosts on one subnet; `services` holds the bridge. Addresses: services .1, others .2.., the test .254."""

    hosts: list[str]
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    subnet: str = field(default_factory=lambda: f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}")
    made: list[str] = field(default_factory=list)  # namespaces created so far (teardown deletes these)

    def namespace(self, host: str) -> str:
        return f"sg{self.token}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts.index(host) + 1}"

    @property
    def admin_address(self) -> str:
        return f"{self.subnet}.254"

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace(host)]

    def up(self) -> None:
        for host in self.hosts:
            ip("netns", "add", self.namespace(host))
            self.made.append(self.namespace(host))
            ip("-n", self.namespace(host), "link", "set", "lo", "up")
        bridge_ns = self.namespace(self.hosts[0])
        ip("-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", bridge_ns, "addr", "add", f"{self.address(self.hosts[0])}/24", "dev", "br0")
        ip("-n", bridge_ns, "link", "set", "br0", "up")
        for number, host in enumerate(self.hosts[1:], start=1):
            self._plug(f"sg{self.token}p{number}", self.namespace(host), "eth0", self.address(host))
        self._plug(f"sg{self.token}a", None, f"sg{self.token}r", self.admin_address)

    def _plug(self, bridge_end: str, namespace: str | None, inner: str, address: str) -> None:
        """A veth pair: `bridge_end` on the bridge, `inner` in `namespace` (None: this root namespace)."""
        peer = ["peer", "name", inner] + (["netns", namespace] if namespace else [])
        ip("link", "add", bridge_end, "type", "veth", *peer)
        bridge_ns = self.namespace(self.hosts[0])
        ip("link", "set", bridge_end, "netns", bridge_ns)
        ip("-n", bridge_ns, "link", "set", bridge_end, "master", "br0", "up")
        where = ["-n", namespace] if namespace else []
        ip(*where, "addr", "add", f"{address}/24", "dev", inner)
        ip(*where, "link", "set", inner, "up")

    def cut(self, host: str) -> None:
        ip("-n", self.namespace(host), "link", "set", "eth0", "down")

    def down(self) -> None:
        """Kill every process left in the namespaces, then delete them (their veths go with them)."""
        for namespace in self.made:
            for pid in _pids(namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for namespace in reversed(self.made):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self.made.clear()
        subprocess.run(["ip", "link", "del", f"sg{self.token}r"], capture_output=True, timeout=30)


def _pids(namespace: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=30)
    return [int(pid) for pid in result.stdout.split()]
