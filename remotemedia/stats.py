"""
Per-node statistics of a pipeline run: where each node ran, how many items
went through it, and how long it took per item.

``pipeline.last_run_stats`` holds one :class:`NodeStats` per node, in
pipeline order, for the latest run; the counters are live while the run
goes on and final once it has ended::

    frames = pipeline.run()
    for stats in pipeline.last_run_stats:
        print(stats)    # "TTSRemote  remote (exec-a)  12 in  12 out  mean 3.1 ms  max 5.0 ms"

What a latency sample measures:

- a ``process()`` node: the duration of one ``process(data)`` call (for a
  remote node, the round trip to the executor and back);
- a streaming node: the time from the first input it read after its previous
  output to its next output; when it read no input in between (a source, or
  several outputs for one input), from its previous output (or the start of
  its stream). Time spent waiting for the next node to take an output is not
  counted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeStats", "LOCAL"]

#: The :attr:`NodeStats.location` of a node that ran in the pipeline's own process.
LOCAL = "local"


@dataclass
class NodeStats:
    """What one node did during one pipeline run."""

    #: The node's name.
    name: str
    #: Its position in the pipeline (0 is the first).
    index: int
    #: ``"local"``, or for a remote node the name of the executor that served it.
    location: str = LOCAL
    #: Whether the node ran on an executor.
    remote: bool = False
    #: For a remote node, where the run placed it and why, e.g. ``"local (no executor
    #: has a GPU)"`` or ``"remote exec-2 (3.1 ms remote vs 41 ms local per input)"``
    #: (see :mod:`remotemedia.remote.placement`); ``""`` for other nodes.
    placement: str = ""
    #: Inputs the node read.
    inputs: int = 0
    #: Outputs the node produced (``None`` results are not outputs).
    outputs: int = 0
    #: Latency samples taken (see the module docstring for what one measures).
    samples: int = 0
    #: Sum of the latency samples, in seconds.
    total_latency: float = 0.0
    #: Longest latency sample, in seconds.
    max_latency: float = 0.0
    #: Calls of a synchronous ``process()`` run on the event loop, because
    #: they had proven cheap (the others ran in a thread; see :mod:`remotemedia.inline`).
    inline_calls: int = 0

    @property
    def mean_latency(self) -> float | None:
        """Mean latency in seconds, or ``None`` before the first sample."""
        return self.total_latency / self.samples if self.samples else None

    def add_latency(self, seconds: float) -> None:
        """Record one latency sample."""
        self.samples += 1
        self.total_latency += seconds
        if seconds > self.max_latency:
            self.max_latency = seconds

    def __str__(self) -> str:
        where = f"remote ({self.location})" if self.remote else self.location
        mean = self.mean_latency
        latency = (
            f"mean {mean * 1e3:.2f} ms  max {self.max_latency * 1e3:.2f} ms"
            if mean is not None
            else "no latency sample"
        )
        return f"{self.name}  {where}  {self.inputs} in  {self.outputs} out  {latency}"
