"""The ONNX Runtime engine: runs a bundle's backbone, head (whole denoising loop + scoring, one call) and residual.

CPU by default; the TensorRT and CUDA execution providers are used where this onnxruntime build has them
(`providers="auto"`). Imports onnxruntime and numpy only: never torch, never tensorrt.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import CHECKPOINT_KEY, BundleError, open_bundle
from policy_runtime.engines.bundle_engine import BundleEngine

log = logging.getLogger("anchorvla.engine")
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _providers(choice: str) -> list[str]:
    import onnxruntime as ort

    if choice == "cpu":
        return ["CPUExecutionProvider"]
    available = set(ort.get_available_providers())
    return [p for p in _GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]


def intra_op_affinities(cpus: list[int], threads: int) -> str:
    """onnxruntime's `session.intra_op_thread_affinities` value: each of its `threads - 1` pool threads (the
    calling thread is the other one) on `cpus`; onnxruntime numbers logical processors from 1."""
    group = ",".join(str(cpu + 1) for cpu in cpus)
    return ";".join([group] * (threads - 1))


class OnnxEngine(BundleEngine):
    """PolicyEngine over a bundle's ONNX variant. `precision` picks it ('auto': the fastest that passed its gates);
    `threads` sets intra_op_num_threads of the backbone and head sessions (the residual runs on one thread).
    `cpus` keeps the backbone and head off the other CPUs (the fast loop's core): their pool threads are pinned
    there by onnxruntime, and the thread that calls them pins itself on its first call (0: one thread per CPU).
    The residual, called from the fast loop itself, is left where its caller runs."""

    def __init__(
        self,
        bundle_dir: Path,
        precision: str = "auto",
        threads: int = 0,
        providers: str = "auto",
        force_unverified: bool = False,
        expected_checkpoint_sha256: str | None = None,
        seed: int = 0,
        cpus: list[int] | None = None,
    ):
        import onnxruntime as ort

        manifest, variant, paths = open_bundle(
            bundle_dir, precision, "onnx", force_unverified, expected_checkpoint_sha256
        )
        super().__init__(bundle_dir, manifest, variant, seed)
        self.graph_paths: dict[str, Path] = dict(paths)  # role -> the ONNX file it runs
        chosen = _providers(providers)
        self.sessions: dict[str, ort.InferenceSession] = {}
        self._cpus = sorted(set(cpus)) if cpus and hasattr(os, "sched_setaffinity") else None
        if self._cpus and not set(self._cpus) <= os.sched_getaffinity(0):
            raise UserError(
                f"policy.cpus {self._cpus}: this process may run on CPUs {sorted(os.sched_getaffinity(0))} only; "
                "pick the engine's CPUs among them"
            )
        self.pinned_threads: set[int] = set()  # threads that pinned themselves to the engine's CPUs
        if self._cpus and not threads:
            threads = len(self._cpus)
        for role, path in paths.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1 if role == "residual" else threads
            if self._cpus and role != "residual" and threads > 1:
                options.add_session_config_entry(
                    "session.intra_op_thread_affinities", intra_op_affinities(self._cpus, threads)
                )
            session = ort.InferenceSession(str(path), options, providers=chosen)
            if (
                session.get_modelmeta().custom_metadata_map.get(CHECKPOINT_KEY)
                != manifest.source_checkpoint.sha256
            ):
                raise BundleError(
                    f"{path} was made from another checkpoint than {self.bundle_dir / 'manifest.json'} names; "
                    "re-export the bundle"
                )
            self.sessions[role] = session
        self.providers = self.sessions["head"].get_providers()
        log.info(
            "onnxruntime engine: bundle %s variant %s on %s", self.bundle_dir, variant, self.providers[0]
        )

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._cpus and role != "residual" and threading.get_ident() not in self.pinned_threads:
            # This thread only (Linux): onnxruntime pins its pool threads, never the caller.
            os.sched_setaffinity(0, self._cpus)
            self.pinned_threads.add(threading.get_ident())
        return self.sessions[role].run(None, feed)

    def close(self) -> None:
        self.sessions.clear()
