"""Three network namespaces for a partition test: client, router, server.

    client 10.77.1.2 --veth-- 10.77.1.1 router 10.77.2.1 --veth-- 10.77.2.2 server
    client 10.77.3.2 ---------------veth (untouched path)-------- 10.77.3.1 server

The addresses exist only inside these namespaces, which this module makes and deletes. The cut
is silent: the router stops forwarding (packets vanish: no reset, no ICMP), or, one way only,
a blackhole route in the router drops one direction. A link set down is not silent (the
sender gets ENETUNREACH at once), so it is not used. Root only; ``why_not()`` says why else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

CLIENT_NET, SERVER_NET, DIRECT_NET = "10.77.1", "10.77.2", "10.77.3"
SERVER_ADDR = f"{SERVER_NET}.2"  # through the router: the path that is cut
DIRECT_ADDR = f"{DIRECT_NET}.1"  # the server's end of the direct link: never cut
CLIENT_NETS = ("10.77.0.0/16",)  # pg_hba: who may connect to the server


def why_not() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the partition tests as root)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing: .ci/run installs it"
    return None


PREFIX = "tpdb"  # every namespace made here: tpdb<pid of the test process>-<random>-<role>


def remove_stale() -> list[str]:
    """Delete the namespaces a killed run of this test left (SIGKILL: no finally ran): only
    ours (PREFIX), and only those whose test process is gone."""
    gone = []
    for ns in _ip("netns", "list", check=False).stdout.split():
        pid = ns[len(PREFIX) :].split("-", 1)[0]
        if ns.startswith(PREFIX) and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", ns, check=False)
            gone.append(ns)
    return gone


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


class Partition:
    """The three namespaces and their links. ``cut()`` / ``heal()`` the router; ``close()``
    deletes everything (the veths go with their namespaces)."""

    def __init__(self) -> None:
        tag = f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.client, self.router, self.server = f"{tag}-c", f"{tag}-r", f"{tag}-s"
        self.made: list[str] = []

    def exec_args(self, ns: str) -> list[str]:
        """The command prefix that runs a program inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns]

    def _in(self, ns: str, *cmd: str) -> None:
        subprocess.run([*self.exec_args(ns), *cmd], capture_output=True, text=True, check=True, timeout=30)

    def open(self) -> Partition:
        try:
            for ns in (self.client, self.router, self.server):
                _ip("netns", "add", ns)
                self.made.append(ns)
                self._in(ns, "ip", "link", "set", "lo", "up")
            c, r, s = self.client, self.router, self.server
            # Each veth is made with both ends already inside their namespaces.
            _ip("link", "add", "c0", "netns", c, "type", "veth", "peer", "name", "r1", "netns", r)
            _ip("link", "add", "r2", "netns", r, "type", "veth", "peer", "name", "s0", "netns", s)
            _ip("link", "add", "c9", "netns", c, "type", "veth", "peer", "name", "s9", "netns", s)
            for ns, dev, addr in ((c, "c0", f"{CLIENT_NET}.2"), (r, "r1", f"{CLIENT_NET}.1"),
                                  (r, "r2", f"{SERVER_NET}.1"), (s, "s0", SERVER_ADDR),
                                  (c, "c9", f"{DIRECT_NET}.2"), (s, "s9", DIRECT_ADDR)):  # fmt: skip
                self._in(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
                self._in(ns, "ip", "link", "set", dev, "up")
            self._in(c, "ip", "route", "add", f"{SERVER_NET}.0/24", "via", f"{CLIENT_NET}.1")
            self._in(s, "ip", "route", "add", f"{CLIENT_NET}.0/24", "via", f"{SERVER_NET}.1")
            self.heal()
        except BaseException:
            self.close()
            raise
        return self

    # -- the cut ----------------------------------------------------------------------------
    def cut(self) -> None:
        """Both ways, silently: the router stops forwarding."""
        self._in(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")

    def cut_one_way(self, to_client: bool = True) -> None:
        """One direction only: the router drops (blackhole: silently) what goes to the client
        (``to_client``) or to the server; the other direction still flows."""
        dest = f"{CLIENT_NET}.2/32" if to_client else f"{SERVER_ADDR}/32"
        self._in(self.router, "ip", "route", "replace", "blackhole", dest)

    def heal(self) -> None:
        for dest in (f"{CLIENT_NET}.2/32", f"{SERVER_ADDR}/32"):
            subprocess.run([*self.exec_args(self.router), "ip", "route", "del", "blackhole", dest],
                           capture_output=True, timeout=30)  # fmt: skip
        self._in(self.router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

    # -- the end ----------------------------------------------------------------------------
    def close(self) -> None:
        """Delete every namespace made (their veths and addresses go with them). Safe twice."""
        while self.made:
            _ip("netns", "del", self.made.pop(), check=False)

    def left_behind(self) -> list[str]:
        """Namespaces of this partition still listed by ``ip netns list``."""
        listed = _ip("netns", "list", check=False).stdout.split()
        return [ns for ns in (self.client, self.router, self.server) if ns in listed]
