"""
A network lab in Linux network namespaces: a client and an executor, each
behind its own NAT, and a "public" network with the signaling and TURN servers.

::

    client 198.18.1.2 ─ natA [198.18.1.1 | 198.19.1.2] ─┐
                                                        pub (198.19.0.1: signaling, TURN)
    exec   198.18.2.2 ─ natB [198.18.2.1 | 198.19.2.2] ─┘

Every address comes from 198.18.0.0/15, the range reserved for network test
labs (RFC 2544); the namespaces have no link to anything outside the ones the
lab creates, so no packet leaves this machine. Each NAT masquerades its LAN
behind its public address with random source ports (``--random-fully``): a
symmetric NAT, behind which hole punching fails and only a relay connects,
the case TURN is for (``Lab(symmetric=False)`` keeps source ports where it can:
a NAT that STUN gets through). :meth:`Lab.block_udp` adds a rule that drops UDP through
a NAT (a firewall that allows only TCP), in the middle of a session too.

Namespace names carry the creating process's id and a random tag, so that
labs of parallel runs never meet, and a lab sweeps away those of dead runs; :meth:`Lab.close` removes them all (and with them every interface
and rule), and ends the processes started in them. Building needs root,
``ip`` (iproute2), ``iptables`` and, for TURN, ``turnserver`` (coturn):
:func:`unavailable` says what is missing, for a skip reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Lab", "Turn", "unavailable", "PUBLIC_IP", "CLIENT_IP", "EXECUTOR_IP"]

#: The public address of the signaling and TURN servers (on the ``pub`` namespace).
PUBLIC_IP = "198.19.0.1"
#: The client's address on its LAN (behind natA).
CLIENT_IP = "198.18.1.2"
#: The executor's address on its LAN (behind natB).
EXECUTOR_IP = "198.18.2.2"

# (nat, lan side of the NAT, host behind it, public side of the NAT, pub's side of that link)
_SIDES = {
    "client": ("natA", "198.18.1.1", CLIENT_IP, "198.19.1.2", "198.19.1.1"),
    "executor": ("natB", "198.18.2.1", EXECUTOR_IP, "198.19.2.2", "198.19.2.1"),
}


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def unavailable(*, turn: bool = True) -> str | None:
    """Why the lab cannot be built on this machine, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "the NAT lab builds network namespaces, which needs root"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), *((("turnserver", "coturn"),) if turn else ())):
        if shutil.which(tool) is None:
            return f"the NAT lab needs {tool!r} (Debian package {package}; './run test' installs it as root)"
    probe = f"rmprobe{secrets.token_hex(3)}"
    result = _run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"this machine does not allow network namespaces: {result.stderr.strip()}"
    try:
        result = _run("ip", "netns", "exec", probe, "iptables", "-t", "nat", "-L", check=False)
        if result.returncode != 0:
            return f"iptables NAT does not work in a network namespace here: {result.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


_NAME = re.compile(r"^rm(\d+)x[0-9a-f]+-\w+$")


def sweep_stale() -> None:
    """Delete the namespaces (and end the processes in them) of labs whose creating process is gone."""
    listed = _run("ip", "netns", "list", check=False).stdout.split()
    for name in listed:
        found = _NAME.match(name)
        if found is None or _alive(int(found.group(1))):
            continue
        for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _run("ip", "netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lab:
    """The namespaces of one lab; build with :meth:`build` (or ``with Lab() as lab``), always :meth:`close`."""

    def __init__(self, *, symmetric: bool = True) -> None:
        """``symmetric=False``: NATs that keep the source port where they can (a "cone"), through which STUN suffices."""
        self.symmetric = symmetric
        # The creating process's id in every name: a later lab sweeps the labs of dead runs.
        self.tag = f"{os.getpid()}x{secrets.token_hex(2)}"
        #: Namespace name by role: ``client``, ``executor``, ``natA``, ``natB``, ``pub``.
        self.ns = {role: f"rm{self.tag}-{role}" for role in ("client", "executor", "natA", "natB", "pub")}
        self._processes: list[subprocess.Popen] = []
        self._rules: list[tuple[str, list[str]]] = []

    def __enter__(self) -> Lab:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def ip(self, role: str, *args: str) -> None:
        """``ip ARGS`` inside the namespace of ``role``."""
        _run("ip", "-n", self.ns[role], *args)

    def exec_prefix(self, role: str) -> list[str]:
        """The command prefix that runs a program inside the namespace of ``role``."""
        return ["ip", "netns", "exec", self.ns[role]]

    def sh(self, role: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside the namespace of ``role``."""
        return _run(*self.exec_prefix(role), *args, check=check)

    def build(self) -> None:
        """Create the namespaces, links, routes and NAT rules of the module docstring."""
        sweep_stale()
        for name in self.ns.values():
            _run("ip", "netns", "add", name)
        for role in self.ns:
            self.ip(role, "link", "set", "lo", "up")
        # The public address lives on pub's loopback: both NATs route to it.
        self.ip("pub", "addr", "add", f"{PUBLIC_IP}/32", "dev", "lo")
        self.sh("pub", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The LANs' private addresses lead nowhere from the public side, silently, as on the
        # internet: without a route, sending there fails at once (ENETUNREACH), and coturn
        # closes an allocation whose relay socket fails a send.
        # (A veth pair with a made-up next hop: this kernel may lack the dummy device.)
        self.ip("pub", "link", "add", "void0", "type", "veth", "peer", "name", "void1")
        self.ip("pub", "addr", "add", "198.19.9.1/30", "dev", "void0")
        for end in ("void0", "void1"):
            self.ip("pub", "link", "set", end, "up")
        self.ip("pub", "neigh", "add", "198.19.9.2", "lladdr", "02:00:00:00:00:01", "dev", "void0", "nud", "permanent")
        self.ip("pub", "route", "add", "198.18.0.0/16", "via", "198.19.9.2", "dev", "void0")
        for side, (nat, nat_lan, host, nat_wan, pub_end) in _SIDES.items():
            # Interface names are at most 15 characters, and exist only inside their namespace.
            self._link(side, "lan0", host, nat, "lan0", nat_lan, 24)
            self._link(nat, "wan0", nat_wan, "pub", f"to{nat}", pub_end, 24)
            self.ip(side, "route", "add", "default", "via", nat_lan)
            self.ip(nat, "route", "add", "default", "via", pub_end)
            self.sh(nat, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            random = ["--random-fully"] if self.symmetric else []
            self.sh(nat, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE", *random)
            # Only answers come in: nothing from outside opens a connection to the LAN.
            self.sh(nat, "iptables", "-A", "FORWARD", "-i", "wan0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
            self.sh(nat, "iptables", "-A", "FORWARD", "-i", "wan0", "-j", "DROP")
            # Unsolicited packets to the NAT itself are dropped before conntrack confirms them: a
            # confirmed entry would take the tuple that an outgoing mapping needs, and the NAT would
            # then move that mapping to another port (so hole punching would fail even here).
            self.sh(nat, "iptables", "-A", "INPUT", "-i", "wan0", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")

    def _link(self, role_a: str, if_a: str, ip_a: str, role_b: str, if_b: str, ip_b: str, prefix: int) -> None:
        # Created in the root namespace, then moved and renamed: random names (at most 15 characters).
        tmp_a, tmp_b = f"rm{secrets.token_hex(6)}", f"rm{secrets.token_hex(6)}"
        _run("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        _run("ip", "link", "set", tmp_a, "netns", self.ns[role_a], "name", if_a)
        _run("ip", "link", "set", tmp_b, "netns", self.ns[role_b], "name", if_b)
        self.ip(role_a, "addr", "add", f"{ip_a}/{prefix}", "dev", if_a)
        self.ip(role_b, "addr", "add", f"{ip_b}/{prefix}", "dev", if_b)
        self.ip(role_a, "link", "set", if_a, "up")
        self.ip(role_b, "link", "set", if_b, "up")

    # -- firewall rules, added mid-test ------------------------------------------------

    def block_udp(self, side: str) -> None:
        """Drop every UDP packet through the NAT of ``side`` (``client`` or ``executor``): a TCP-only firewall."""
        self._rule(_SIDES[side][0], ["FORWARD", "-p", "udp", "-j", "DROP"])

    def _rule(self, nat: str, rule: list[str]) -> None:
        # Inserted first in FORWARD: it drops the flows already tracked as well.
        self.sh(nat, "iptables", "-I", *rule)
        self._rules.append((nat, rule))

    def unblock(self) -> None:
        """Remove the rules that :meth:`block_udp` added."""
        while self._rules:
            nat, rule = self._rules.pop()
            self.sh(nat, "iptables", "-D", *rule, check=False)

    # -- processes -----------------------------------------------------------------------

    def popen(self, role: str, args: list[str], **kwargs) -> subprocess.Popen:
        """Start ``args`` inside ``role``'s namespace; :meth:`close` ends it."""
        process = subprocess.Popen([*self.exec_prefix(role), *args], **kwargs)
        self._processes.append(process)
        return process

    def close(self) -> None:
        """End the processes started here and delete every namespace (safe to call twice)."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._processes.clear()
        for name in self.ns.values():
            # Deleting a namespace deletes its interfaces (and their veth peers) and rules.
            _run("ip", "netns", "del", name, check=False)


class Turn:
    """
    coturn's ``turnserver`` on ``pub``, at :data:`PUBLIC_IP`:``port`` over UDP
    and TCP, with REST-API credentials (``--use-auth-secret``) of its own secret.
    """

    def __init__(self, lab: Lab, *, port: int = 3478) -> None:
        self.port = port
        #: The shared secret; the signaling server derives time-limited credentials from it.
        self.secret = secrets.token_urlsafe(24)
        self.realm = "lab.remotemedia"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="turnserver-", suffix=".log", delete=False)
        # The namespace is new: every port in it is free.
        self.process = lab.popen(
            "pub",
            [
                "turnserver", "-n", "-v", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
                f"--listening-ip={PUBLIC_IP}", f"--relay-ip={PUBLIC_IP}", f"--listening-port={port}",
                "--min-port=49152", "--max-port=49999", "--use-auth-secret", f"--static-auth-secret={self.secret}",
                f"--realm={self.realm}", "--log-file=stdout", "--simple-log", "--allow-loopback-peers",
                f"--pidfile={self._log.name}.pid",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening(lab)

    def _wait_listening(self, lab: Lab, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.process.returncode}:\n{self.log()}")
            listening = lab.sh("pub", "ss", "-Htln", f"sport = :{self.port}", check=False).stdout
            if listening.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"turnserver did not listen within {timeout} s:\n{self.log()}")

    @property
    def stun_url(self) -> str:
        """This server as a STUN server (coturn answers binding requests unauthenticated)."""
        return f"stun:{PUBLIC_IP}:{self.port}"

    def urls(self, *transports: str) -> list[str]:
        """``turn:`` URLs of this server, one per transport (``udp``, ``tcp``)."""
        return [f"turn:{PUBLIC_IP}:{self.port}?transport={t}" for t in transports or ("udp", "tcp")]

    def log(self) -> str:
        """What turnserver logged."""
        return Path(self._log.name).read_text(errors="replace")

    def allocations(self) -> int:
        """How many relay allocations the log shows were made so far."""
        return self.log().count("ALLOCATE processed, success")

