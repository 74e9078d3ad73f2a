"""The ONNX Runtime engine: runs a bundle's backbone, head (whole denoising loop + scoring, one call) and residual.

CPU by default; the TensorRT and CUDA execution providers are used where this onnxruntime build has them
(`providers="auto"`). Imports onnxruntime and numpy only: never torch, never tensorrt.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

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


class OnnxEngine(BundleEngine):
    """PolicyEngine over a bundle's ONNX variant. `precision` picks it ('auto': the fastest that passed its gates);
    `threads` sets intra_op_num_threads of the backbone and head sessions (the residual runs on one thread)."""

    def __init__(
        self,
        bundle_dir: Path,
        precision: str = "auto",
        threads: int = 0,
        providers: str = "auto",
        force_unverified: bool = False,
        expected_checkpoint_sha256: str | None = None,
        seed: int = 0,
    ):
        import onnxruntime as ort

        manifest, variant, paths = open_bundle(
            bundle_dir, precision, "onnx", force_unverified, expected_checkpoint_sha256
        )
        super().__init__(bundle_dir, manifest, variant, seed)
        self.graph_paths: dict[str, Path] = dict(paths)  # role -> the ONNX file it runs
        chosen = _providers(providers)
        self.sessions: dict[str, ort.InferenceSession] = {}
        for role, path in paths.items():
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1 if role == "residual" else threads
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
        return self.sessions[role].run(None, feed)

    def close(self) -> None:
        self.sessions.clear()
