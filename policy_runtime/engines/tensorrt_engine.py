"""The TensorRT engine: runs a bundle's `trt-*` variant (engines built on this device by `anchorvla build-trt`).

TensorRT 10 Python API (named I/O tensors, `execute_async_v3`); device memory and copies through the CUDA runtime
bindings of cuda-python (`cuda.bindings.runtime`, or `cuda.cudart` in older releases). Imports neither torch nor
onnxruntime. Runs only where a CUDA GPU and TensorRT are present (the Jetson); its tests are marked `gpu`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import open_bundle
from policy_runtime.engines.bundle_engine import BundleEngine

log = logging.getLogger("anchorvla.engine")


def import_tensorrt():
    """(tensorrt, cudart) or a UserError in one line saying what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError(
            "TensorRT is not installed here (on the Jetson it comes with JetPack; elsewhere pip install tensorrt); "
            "use policy.engine: onnxruntime"
        ) from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise UserError("the TensorRT engine needs cuda-python (pip install cuda-python)") from None
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0 or count == 0:
        raise UserError(
            "no CUDA GPU is visible: the TensorRT engine cannot run here; use policy.engine: onnxruntime"
        )
    return trt, cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA runtime error {err}")
    return rest[0] if len(rest) == 1 else rest


class _TrtGraph:
    """One deserialized engine with device buffers for each of its (static-shape) I/O tensors."""

    def __init__(self, trt, cudart, runtime, path: Path, stream):
        self.cudart, self.stream = cudart, stream
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"{path}: TensorRT could not load it (built for another device or TensorRT version?); "
                            "rebuild with `anchorvla build-trt` on this device")  # fmt: skip
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs, self.device = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            ptr = _check(cudart.cudaMalloc(int(np.prod(shape)) * dtype.itemsize))
            self.device[name] = ptr
            self.context.set_tensor_address(name, ptr)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append((name, shape, dtype))

    def run(self, feed: dict[str, np.ndarray], output_order: list[str]) -> list[np.ndarray]:
        rt = self.cudart
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, shape, dtype in self.inputs:
            host = np.ascontiguousarray(feed[name], dtype=dtype).reshape(shape)
            _check(rt.cudaMemcpyAsync(self.device[name], host.ctypes.data, host.nbytes, h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        results = {}
        for name, shape, dtype in self.outputs:
            host = np.empty(shape, dtype)
            _check(rt.cudaMemcpyAsync(host.ctypes.data, self.device[name], host.nbytes, d2h, self.stream))
            results[name] = host
        _check(rt.cudaStreamSynchronize(self.stream))
        return [results[name] for name in output_order]

    def free(self) -> None:
        for ptr in self.device.values():
            self.cudart.cudaFree(ptr)
        self.device.clear()


class TensorRTEngine(BundleEngine):
    def __init__(
        self,
        bundle_dir: Path,
        precision: str = "auto",
        threads: int = 0,  # accepted for a uniform constructor; TensorRT runs on the GPU
        force_unverified: bool = False,
        expected_checkpoint_sha256: str | None = None,
        seed: int = 0,
    ):
        trt, cudart = import_tensorrt()
        manifest, variant, paths = open_bundle(
            bundle_dir, precision, "tensorrt", force_unverified, expected_checkpoint_sha256
        )
        super().__init__(bundle_dir, manifest, variant, seed)
        self._cudart = cudart
        self._stream = _check(cudart.cudaStreamCreate())
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        files = manifest.variants[variant].graphs
        self._outputs = {role: [o.name for o in manifest.graphs[files[role]].outputs] for role in paths}
        self.graphs = {
            role: _TrtGraph(trt, cudart, runtime, path, self._stream) for role, path in paths.items()
        }
        log.info("tensorrt engine: bundle %s variant %s", self.bundle_dir, variant)

    def _run(self, role: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.graphs[role].run(feed, self._outputs[role])

    def close(self) -> None:
        for graph in self.graphs.values():
            graph.free()
        self.graphs.clear()
        self._cudart.cudaStreamDestroy(self._stream)
