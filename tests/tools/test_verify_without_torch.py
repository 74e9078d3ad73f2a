"""`anchorvla verify` where torch cannot be imported (the board after `build-trt`): the bundle's stored references
(held-out observations and FP32 outputs, written when verify ran with torch) verify its variants; a tampered
variant fails its gates, a tampered or pickled references file is refused with one line.

Without torch means: a child process whose import system refuses `torch` (a meta-path finder raising ImportError,
as a venv without torch does), which then runs the command line; it also checks that no torch module was loaded.
A real venv without torch is not built here (it costs a full install).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper

from policy_runtime.bundle import read_manifest, sha256_file
from policy_runtime.engines.onnx_engine import OnnxEngine
from tests.bundle_helpers import bundle_copy
from tools.onnx_files import graph_entry, save_graph

WITHOUT_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"No module named {name!r} (blocked: a board without torch)")
        return None

sys.meta_path.insert(0, NoTorch())
from anchorvla.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, f"torch was imported: {loaded}"
sys.exit(rc)
"""


def verify_without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "verify", *args], capture_output=True, text=True, timeout=300
    )


def test_stored_references_verify_an_int8_bundle_without_torch_and_the_runtime_then_accepts_it(tmp_path):
    bundle = bundle_copy(tmp_path)
    manifest = read_manifest(bundle)
    assert manifest.references is not None and manifest.references.samples > 0
    for variant in manifest.variants.values():  # as after build-trt: nothing verified yet
        variant.status, variant.verification = "unverified", {}
    manifest.write(bundle)
    done = verify_without_torch(str(bundle))
    assert done.returncode == 0, done.stderr
    assert "reference: the FP32 outputs stored in the bundle (torch cannot be imported here" in done.stdout
    manifest = read_manifest(bundle)
    assert manifest.variants["int8"].status == "passed", manifest.variants["int8"].verification
    assert manifest.variants["int8"].verification["samples"] == manifest.references.samples
    assert OnnxEngine(bundle, precision="int8").variant == "int8"  # verified: the runtime takes it


def test_a_tampered_int8_graph_with_fixed_up_hashes_fails_against_the_stored_references(tmp_path):
    bundle = bundle_copy(tmp_path)
    manifest = read_manifest(bundle)
    model = onnx.load(str(bundle / "backbone.onnx"))  # an "int8 backbone" whose projector was altered
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if "projector" in init.name:
            w = numpy_helper.to_array(init)
            init.CopyFrom(
                numpy_helper.from_array((w + rng.normal(0, 0.5, w.shape)).astype(w.dtype), init.name)
            )
    file = manifest.variants["int8"].graphs["backbone"]
    for ref in manifest.graphs[file].external_data:
        (bundle / ref.file).unlink()
    save_graph(model, bundle, file, manifest.source_checkpoint.sha256)
    manifest.graphs[file] = graph_entry(bundle, file, "backbone", "int8", "tampered", [], {})
    manifest.write(bundle)  # the hashes match the tampered file: only the reference can tell
    done = verify_without_torch(str(bundle), "--variants", "int8")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed gates: int8" in done.stdout
    assert read_manifest(bundle).variants["int8"].status == "failed"


def test_a_tampered_or_pickled_references_file_is_refused_with_one_line(tmp_path):
    bundle = bundle_copy(tmp_path)
    path = bundle / read_manifest(bundle).references.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    done = verify_without_torch(str(bundle))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "does not match its sha256" in done.stderr

    np.savez(path, **{"output.bridge": np.array([{"x": 1}], dtype=object)})  # a pickle inside
    manifest = read_manifest(bundle)
    manifest.references.sha256 = sha256_file(path)
    manifest.write(bundle)
    done = verify_without_torch(str(bundle))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "not a readable references file" in done.stderr and "allow_pickle" in done.stderr


def test_without_stored_references_the_line_says_where_to_make_them(tmp_path):
    bundle = bundle_copy(tmp_path)
    manifest = read_manifest(bundle)
    (bundle / manifest.references.file).unlink()
    manifest.references = None
    manifest.write(bundle)
    done = verify_without_torch(str(bundle))
    assert done.returncode == 2 and "carries no reference outputs" in done.stderr
    assert "where torch and the checkpoint are" in done.stderr
