"""
The benchmarks' shared runner output: a table on stdout and a JSON file.

Every case is measured against a baseline taken in the same run, on the same
machine, and reported as a ratio (ours / baseline), with the target it is
held to when there is one. Timings on a shared machine are noisy, so targets
are reported, never asserted.

    report = Report("remote")
    report.add("call round trip p50", ours=0.55e-3, baseline=0.45e-3, unit="s", target=1.3)
    report.finish()  # prints the table, writes benchmarks/results/remote.json
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Case", "Report", "percentile"]

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Case:
    """One measured figure and its baseline."""

    #: What was measured.
    name: str
    #: Our figure.
    ours: float
    #: The baseline's figure, measured in the same run.
    baseline: float
    #: ``"s"`` (lower is better) or a rate such as ``"MB/s"`` (higher is better).
    unit: str
    #: The ratio the case should stay within (``ours / baseline``), if any.
    target: float | None = None
    #: What the baseline is.
    against: str = "raw aiortc"

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio <= self.target if self.unit == "s" else self.ratio >= self.target


class Report:
    """Collects cases; :meth:`finish` prints them and writes ``results/NAME.json``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cases: list[Case] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """A measured fact that explains the cases (printed under the table)."""
        self.notes.append(text)

    def add(self, name: str, *, ours: float, baseline: float, unit: str, target: float | None = None,
            against: str = "raw aiortc") -> Case:
        case = Case(name, ours, baseline, unit, target, against)
        self.cases.append(case)
        return case

    def finish(self) -> Path:
        print(f"\n{self.name}: ours against a baseline measured in the same run")
        # Names longer than the usual 40 columns widen the column rather than push their row out of line.
        width = max([40] + [len(c.name) + 1 for c in self.cases])
        print(f"  {'case':<{width}}{'ours':>12}{'baseline':>12}{'ratio':>8}  target")
        for c in self.cases:
            scale, unit = (1e3, "ms") if c.unit == "s" else (1.0, c.unit)
            target = "" if c.target is None else (
                f"{'<=' if c.unit == 's' else '>='} {c.target:g}  {'met' if c.met else 'MISSED'}")
            print(f"  {c.name:<{width}}{c.ours * scale:>9.3f} {unit:<2}{c.baseline * scale:>9.3f} {unit:<2}"
                  f"{c.ratio:>7.2f}x  {target}")
        for text in self.notes:
            print(f"  note: {text}")
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        data = {
            "benchmark": self.name,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "cases": [{**asdict(c), "ratio": c.ratio, "met": c.met} for c in self.cases],
            "notes": self.notes,
        }
        path.write_text(json.dumps(data, indent=2))
        print(f"  written to {path}")
        return path
