"""Where a chunk's time goes, per module (vision, LLM, head, residual), for `anchorvla bench engines`.

The backbone and head are timed as the engines call them (wall clock, per chunk); the residual per call (it runs
on every fast-loop tick, not per chunk). Inside the backbone the vision tower (with its projector) and the LLM
share one call: torch splits it with forward hooks on the two towers; ONNX Runtime with its profiler, whose
per-node kernel times are summed by the node name's module path (the exporter names every node after the
torch module it came from, `/backbone/vision/...`, `/backbone/llm/...`) and the backbone's wall time shared out
in those proportions. Inside the head the same profiler separates the denoising loop (K anchors x steps, every
`/blocks.N/...` node and the per-step MLPs) from what runs once per chunk (`/cond_in`, the pooled context).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Node-name prefix -> module, first match wins. Nodes the optimizer made up (no module path) go to 'other'.
BACKBONE_MODULES = (
    ("/backbone/vision", "vision"),
    ("/backbone/projector", "vision"),
    ("/backbone/llm", "llm"),
    ("/backbone/embed_tokens", "llm"),
)
HEAD_ONCE_PER_CHUNK = ("/cond_in", "/ReduceMean", "/gripper_head")  # the rest of the head graph is the loop


def module_of(node: str) -> str:
    """The backbone module a node (by its name) belongs to; a prefix may follow a fused node's own name."""
    for prefix, module in BACKBONE_MODULES:
        if node.startswith(prefix) or f"{prefix}/" in node:
            return module
    return "other"


def profile_node_times(
    path: Path, feed: dict[str, np.ndarray], threads: int, runs: int = 3
) -> dict[str, float]:
    """Sum of each node's kernel time (ms per run) over `runs` profiled runs of the graph at `path`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        taken = {i.name for i in session.get_inputs()}
        feed = {k: v for k, v in feed.items() if k in taken}
        for _ in range(runs + 1):  # the first is a warm-up, left out below
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after_warm_up = run_starts[1] if len(run_starts) > 1 else 0
    times: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after_warm_up:
            times[e["name"].removesuffix("_kernel_time")] += e["dur"] / 1000 / runs
    return dict(times)


def shares(node_times: dict[str, float], classify: Callable[[str], str]) -> dict[str, float]:
    """Fraction of the summed node time per class."""
    total = sum(node_times.values()) or 1.0
    out: dict[str, float] = defaultdict(float)
    for name, ms in node_times.items():
        out[classify(name)] += ms / total
    return dict(out)


def head_part(node: str) -> str:
    return "once" if any(node.startswith(p) for p in HEAD_ONCE_PER_CHUNK) else "denoise"


class TorchModuleTimer:
    """Wall time spent inside the given torch modules' forward calls (forward pre/post hooks), per call group."""

    def __init__(self, modules: dict[str, object]):
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self._handles = []
        for name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(self._enter(name)))
            self._handles.append(module.register_forward_hook(self._leave(name)))

    def _enter(self, name: str):
        def hook(_module, _args):
            self._start[name] = time.perf_counter()

        return hook

    def _leave(self, name: str):
        def hook(_module, _args, _out):
            self.totals[name] += (time.perf_counter() - self._start.pop(name)) * 1e3

        return hook

    def take(self) -> dict[str, float]:
        """The totals since the last take (ms), then zero."""
        out, self.totals = dict(self.totals), defaultdict(float)
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def pin(cpus: list[int] | None) -> None:
    """Run this process (and the threads it starts afterwards) on `cpus` only (Linux; elsewhere a no-op)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
