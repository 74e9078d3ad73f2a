"""Offline helpers shared by export, quantize and build-trt: saving an ONNX graph into a bundle (external data
for graphs over 2 GB), reading its inputs/outputs, and adding its manifest entry with sha256."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from policy_runtime.bundle import CHECKPOINT_KEY, FileRef, GraphEntry, TensorSpec, sha256_file

EXTERNAL_DATA_ABOVE_BYTES = 1_800_000_000  # protobuf's hard limit is 2 GiB: keep weights outside well before

_ONNX_DTYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool", 3: "int8", 2: "uint8"}


def _specs(values) -> list[TensorSpec]:
    out = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
        out.append(
            TensorSpec(name=v.name, shape=shape, dtype=_ONNX_DTYPES.get(t.elem_type, str(t.elem_type)))
        )
    return out


def save_graph(model, directory: Path, file: str, checkpoint_sha256: str) -> list[str]:
    """Stamp the source checkpoint into the graph's metadata and save it; returns the external data files."""
    import onnx

    directory = Path(directory)
    props = {p.key: p.value for p in model.metadata_props}
    props[CHECKPOINT_KEY] = checkpoint_sha256
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    data_file = file + ".data"
    (directory / data_file).unlink(missing_ok=True)
    large = not _fits_in_proto(model)
    onnx.save_model(
        model,
        str(directory / file),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=data_file,
        size_threshold=1024,
    )
    return [data_file] if large else []


def _fits_in_proto(model) -> bool:
    total = sum(int(np.prod(t.dims)) * 4 for t in model.graph.initializer)
    return total < EXTERNAL_DATA_ABOVE_BYTES


def graph_entry(
    directory: Path,
    file: str,
    role: str,
    precision: str,
    method: str,
    external: list[str],
    verification: dict,
) -> GraphEntry:
    import onnx

    model = onnx.load(str(Path(directory) / file), load_external_data=False)
    return GraphEntry(
        role=role,
        precision=precision,
        file=file,
        sha256=sha256_file(Path(directory) / file),
        external_data=[FileRef(file=e, sha256=sha256_file(Path(directory) / e)) for e in external],
        inputs=_specs(model.graph.input),
        outputs=_specs(model.graph.output),
        method=method,
        verification=verification,
    )


def ort_session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Cosine similarity and max abs error of two arrays (flattened, float64)."""
    a = np.asarray(reference, np.float64).ravel()
    b = np.asarray(other, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    cos = float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))
    return {"cosine": cos, "max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0}
