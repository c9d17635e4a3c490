"""
Routes across NATs: call round trip, 1 MiB echo and set-up time, direct
against through STUN and relayed through TURN, in one run, on this machine.

Builds the network lab of tests/netlab.py (network namespaces: needs root,
``ip``, ``iptables`` and coturn's ``turnserver``) and runs the lab's client
(tests/nat_client.py) four ways against one executor behind a NAT:

- **direct**: the client beside the executor on its LAN (host candidates);
- **stun**: the client behind its own NAT, both NATs keeping ports (a cone),
  STUN only: a hole punched through both;
- **relay (TURN/UDP)**: both NATs symmetric: every packet through coturn;
- **relay (TURN/TCP)**: the same with UDP blocked at both NATs.

The baseline of each case is the direct route measured in the same run. All
traffic stays between the lab's namespaces (veth pairs in one kernel), so the
relay's cost here is coturn's work and the extra hops, not distance.

    sudo python benchmarks/bench_turn.py [--rounds 300] [--setups 3]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import unavailable  # noqa: E402
from report import Report  # noqa: E402
from test_nat_traversal import client_settings, nat_lab, run_client  # noqa: E402


def measure(lab, port: int, role: str, rounds: int, setups: int) -> dict:
    """The median call and 1 MiB echo of one client run, and the median set-up over ``setups`` clients."""
    settings = client_settings(port, rounds=rounds, timeout=60.0)
    runs = [run_client(lab, "bench", settings, role=role, timeout=300)]
    runs += [run_client(lab, "connect", settings, role=role) for _ in range(setups - 1)]
    for run in runs:
        if "error" in run:
            raise RuntimeError(run["error"])
    return {
        "route": runs[0]["route"],
        "call_s": runs[0]["call_ms"] / 1e3,
        "mib_s": runs[0]["mib_echo_ms"] / 1e3,
        "setup_s": statistics.median(run["setup_s"] for run in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300, help="calls timed per route")
    parser.add_argument("--setups", type=int, default=3, help="clients whose set-up is timed per route")
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        print(f"bench_turn: skipped: {why}")
        return 0
    results = {}
    with nat_lab() as (lab, turn, port, executor):
        results["direct"] = measure(lab, port, "executor", args.rounds, args.setups)
        results["relay (TURN/UDP)"] = measure(lab, port, "client", args.rounds, args.setups)
        lab.block_udp("client")
        lab.block_udp("executor")
        results["relay (TURN/TCP)"] = measure(lab, port, "client", args.rounds, args.setups)
    with nat_lab(turn=False, stun=True, symmetric=False) as (lab, turn, port, executor):
        results["stun"] = measure(lab, port, "client", args.rounds, args.setups)
    expected = {"direct": "direct", "stun": "stun", "relay (TURN/UDP)": "relay", "relay (TURN/TCP)": "relay"}
    for name, result in results.items():
        if result["route"] != expected[name]:
            raise RuntimeError(f"{name}: the session went {result['route']!r}, not {expected[name]!r}")
    report = Report("turn")
    direct = results["direct"]
    for name in ("stun", "relay (TURN/UDP)", "relay (TURN/TCP)"):
        result = results[name]
        report.add(f"call round trip p50, {name}", ours=result["call_s"], baseline=direct["call_s"], unit="s", against="direct")
        report.add(f"1 MiB echo p50, {name}", ours=result["mib_s"], baseline=direct["mib_s"], unit="s", against="direct")
        report.add(f"set-up (pair to open), {name}", ours=result["setup_s"], baseline=direct["setup_s"], unit="s", against="direct")
    report.note(
        f"direct: call {direct['call_s'] * 1e3:.2f} ms, 1 MiB echo {direct['mib_s'] * 1e3:.0f} ms, "
        f"set-up {direct['setup_s'] * 1e3:.0f} ms ({args.rounds} calls, {args.setups} set-ups per route)"
    )
    report.note("set-up includes the UDP probe of each TURN URL (one round trip; 1 s where UDP is blocked)")
    report.finish()
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
