"""A manifest names only files inside its bundle: `../x`, absolute paths and symlinks that lead out are refused
with one line before anything is read, through the library and `anchorvla run` (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from policy_runtime.bundle import BundleError, open_bundle, read_manifest, sha256_file

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "policies" / "demo" / "bundle"


@pytest.fixture
def bundle(tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(DEMO, target)
    return target


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def rename_graph(manifest: dict, old: str, new: str) -> None:
    """The graph `old` renamed to `new` everywhere the manifest names it."""
    entry = manifest["graphs"].pop(old)
    entry["file"] = new
    manifest["graphs"][new] = entry
    for variant in manifest["variants"].values():
        variant["graphs"] = {r: new if f == old else f for r, f in variant["graphs"].items()}


def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.onnx"
    path.write_bytes(b"outside the bundle")
    return path


@pytest.mark.parametrize("name", ["../secret.onnx", "ABSOLUTE", "sub/../../secret.onnx"])
def test_a_graph_outside_the_bundle_is_refused(tmp_path, bundle, name):
    outside = secret(tmp_path)
    name = str(outside) if name == "ABSOLUTE" else name

    def change(m):
        rename_graph(m, "residual.onnx", name)
        m["graphs"][name]["sha256"] = sha256_file(outside)  # a consistent manifest: only the path is wrong

    edit_manifest(bundle, change)
    with pytest.raises(BundleError) as exc:
        open_bundle(bundle, "fp32")
    text = str(exc.value)
    assert f"names {name!r}, which leads outside the bundle directory" in text and "\n" not in text


def test_external_data_tokenizer_and_other_files_are_confined(tmp_path, bundle):
    outside = secret(tmp_path)
    ref = {"file": "../secret.onnx", "sha256": sha256_file(outside)}
    cases = [
        lambda m: m["graphs"]["head.onnx"]["external_data"].append(ref),
        lambda m: m["files"].update({"/etc/passwd": "0" * 64}),
        lambda m: m["runtime"].update(
            {"tokenizer": {"kind": "tokenizers", "length": 8, "file": "../tokenizer.json"}}
        ),
        lambda m: m["variants"]["fp32"]["graphs"].update({"residual": "../residual.onnx"}),
    ]
    original = (bundle / "manifest.json").read_text()
    for change in cases:
        (bundle / "manifest.json").write_text(original)
        edit_manifest(bundle, change)
        with pytest.raises(BundleError, match="leads outside the bundle directory"):
            read_manifest(bundle)


def test_a_symlink_leading_out_of_the_bundle_is_refused(tmp_path, bundle):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "residual.onnx", outside)
    (bundle / "residual.onnx").unlink()
    (bundle / "residual.onnx").symlink_to(outside)  # same content, same sha256: only the location is wrong
    with pytest.raises(BundleError, match="'residual.onnx', which leads outside the bundle directory"):
        open_bundle(bundle, "fp32")


def test_a_symlink_inside_the_bundle_is_accepted(bundle):
    (bundle / "graphs").mkdir()
    (bundle / "residual.onnx").rename(bundle / "graphs" / "residual.onnx")
    (bundle / "residual.onnx").symlink_to("graphs/residual.onnx")
    _manifest, name, paths = open_bundle(bundle, "fp32")
    assert name == "fp32" and paths["residual"] == bundle / "residual.onnx"


def test_run_refuses_the_bundle_with_one_line_exit_2(tmp_path, bundle, cli):
    edit_manifest(bundle, lambda m: rename_graph(m, "head.onnx", "../../head.onnx"))
    config = tmp_path / "c.yaml"
    config.write_text(
        "robot: {arm: {driver: standin}, base: {driver: standin}}\n"
        f"policy: {{engine: onnxruntime, bundle: {bundle}}}\n"
    )
    result = cli("run", "--config", str(config), "--duration", "1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'../../head.onnx', which leads outside the bundle directory" in lines[0]
