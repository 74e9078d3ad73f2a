"""Pretrained-format towers: a tiny Hugging Face SigLIP + Qwen2 pair with its own tokenizer trains (`anchorvla
train`), exports and runs through the ONNX engine with the onboard tokenizer (`tokenizers`, no torch), giving the
torch chunk; a tokenizer its LM cannot read is refused in one line, exit 2, at train and at export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from anchorvla.cli import main as cli
from policy_runtime.engines.onnx_engine import OnnxEngine
from policy_runtime.model.checkpoint import load_checkpoint
from policy_runtime.model.tokenizer import LocalTokenizer
from tests.bundle_helpers import write_demo_dataset
from tests.policy_runtime.hf_towers import SENTENCES, architecture, write_tokenizer, write_towers
from tests.policy_runtime.test_onnx_engine import _observation

TRAIN = ["--steps", "2", "--horizon", "4", "--num-anchors", "4", "--batch", "4", "--residual-steps", "1"]
TRAIN += ["--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return write_towers(tmp_path_factory.mktemp("towers"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("ds"), seed=1, episodes=2, frames=6)


def train(out, dataset, arch: dict) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(arch))
    args = [
        "train",
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--architecture",
        str(out.parent / f"{out.name}.json"),
    ]
    return cli([*args, *TRAIN])


def trained_bundle(root, towers, dataset, bridge: str, layers: list[int]):
    """(checkpoint, bundle) of a policy trained on the two directories, exported and verified."""
    checkpoint, bundle = root / "checkpoint", root / "bundle"
    assert train(checkpoint, dataset, architecture(*towers, bridge, layers)) == 0
    assert cli(["export", str(checkpoint), str(bundle)]) == 0
    assert cli(["verify", str(bundle), "--count", "4", "--threads", "1"]) == 0
    return checkpoint, bundle


@pytest.fixture(scope="module")
def layerwise(tmp_path_factory, towers, dataset):
    return trained_bundle(tmp_path_factory.mktemp("layerwise"), towers, dataset, "layers", [1, 2])


def onnx_and_torch_chunks(checkpoint, bundle, instruction: str):
    """The ONNX engine's chunk (onboard tokenizer) and the torch policy's on the same observation and noise (the
    checkpoint's tokenizer, as the torch engine uses it), with both token rows."""
    engine = OnnxEngine(bundle, precision="fp32", threads=1, seed=7)
    obs = _observation()
    obs = type(obs)(obs.t_ns, obs.arm, obs.base, obs.frames, instruction)
    chunk = engine.infer(obs)
    policy, config = load_checkpoint(checkpoint)
    ids, mask = policy.tokenizer.encode([instruction], config.architecture.backbone.max_instruction_tokens)
    noise = np.random.default_rng(7).standard_normal(engine.manifest.runtime.noise_shape).astype(np.float32)
    t = torch.from_numpy
    with torch.no_grad():
        ref = policy(t(engine.inputs.proprio(obs)), t(noise), t(engine.inputs.images(obs)), t(ids), t(mask))[
            0
        ]
    expected = engine.inputs.to_si(ref.numpy()[0])
    return chunk.actions, expected, engine.inputs.tokens(instruction), (ids, mask)


def test_hf_pair_trains_exports_and_runs_onboard_with_its_own_tokenizer(towers, layerwise):
    from transformers import SiglipVisionModel

    vision_dir, _llm_dir = towers
    checkpoint, bundle = layerwise
    policy, config = load_checkpoint(checkpoint)
    # The frozen tower is the pretrained one, carried whole by the checkpoint (and its sizes by config.json).
    pretrained = SiglipVisionModel.from_pretrained(vision_dir, local_files_only=True)
    tower = policy.backbone.vision.encoder.layers[0].mlp.fc1.weight
    assert torch.equal(tower, pretrained.encoder.layers[0].mlp.fc1.weight)
    saved = json.loads((checkpoint / "config.json").read_text())["architecture"]["backbone"]
    assert (
        saved["tokenizer"] == "tokenizer.json"
        and saved["llm"]["vocab_size"] == policy.tokenizer.vocab_size + 8
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["runtime"]["tokenizer"] == {
        "kind": "tokenizers",
        "length": 8,
        "file": "tokenizer.json",
        "pad_id": 0,
    }
    for instruction in ("pick up the red cup", "open the drawer"):
        got, expected, onboard, (ids, mask) = onnx_and_torch_chunks(checkpoint, bundle, instruction)
        np.testing.assert_array_equal(onboard[0], ids)
        np.testing.assert_array_equal(onboard[1], mask)
        words = len(instruction.split())
        assert mask[0].tolist() == [1] * words + [0] * (8 - words) and np.all(ids[0, words:] == 0)
        assert len(set(ids[0, :words].tolist())) == words and 1 not in ids[0]  # every word known (1 is [UNK])
        np.testing.assert_allclose(got, expected, atol=1e-4)
    # Onboard, the bundle's tokenizer needs neither torch nor transformers.
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from policy_runtime.bundle import Manifest
        from policy_runtime.engines.inputs import make_tokenizer
        spec = Manifest.model_validate_json(Path({str(bundle)!r}, "manifest.json").read_text()).runtime
        ids, mask = make_tokenizer(spec, Path({str(bundle)!r}))("open the drawer")
        assert mask.sum() == 3, mask
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "imported"
        """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _one_line_exit_2(capsys, argv, *expected):
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for part in expected:
        assert part in err, err


def test_a_tokenizer_the_lm_cannot_read_is_one_line_exit_2_at_train_and_export(
    towers, dataset, layerwise, tmp_path, capsys
):
    vision_dir, llm_dir = towers
    big = tmp_path / "big"  # more token ids than the LM has embedding rows
    size = write_tokenizer(big, [*SENTENCES, " ".join(f"word{i}" for i in range(40))])
    arch = architecture(vision_dir, llm_dir, "layers", [1, 2], tokenizer=str(big))
    (tmp_path / "big.json").write_text(json.dumps(arch))
    argv = [
        "train",
        "--dataset",
        str(dataset),
        "--out",
        str(tmp_path / "x"),
        "--architecture",
        str(tmp_path / "big.json"),
    ]
    _one_line_exit_2(
        capsys,
        [*argv, *TRAIN],
        f"tokenizer {big}/tokenizer.json has {size} token ids",
        f"LM {llm_dir} has 24 embedding rows",
    )
    # The right size, but it ends text with another token than the LM's.
    other_eos = tmp_path / "other_eos"
    write_tokenizer(other_eos, eos="<|im_end|>")
    arch = architecture(vision_dir, llm_dir, "layers", [1, 2], tokenizer=str(other_eos))
    (tmp_path / "eos.json").write_text(json.dumps(arch))
    argv[-1] = str(tmp_path / "eos.json")
    _one_line_exit_2(capsys, [*argv, *TRAIN], "ends text with id 2 but the LM", "with [0]")
    # A checkpoint whose tokenizer.json was swapped for the big one: refused when export loads it.
    checkpoint = tmp_path / "swapped"
    shutil.copytree(layerwise[0], checkpoint)
    LocalTokenizer(big).save(checkpoint / "tokenizer.json")
    _one_line_exit_2(
        capsys,
        ["export", str(checkpoint), str(tmp_path / "bundle")],
        f"has {size} token ids",
        "has 24 embedding rows",
    )
    # The two directories swapped: refused before loading (transformers would build a default-sized Qwen2).
    arch = architecture(llm_dir, vision_dir, "layers", [1, 2])
    (tmp_path / "swapped.json").write_text(json.dumps(arch))
    argv[-1] = str(tmp_path / "swapped.json")
    _one_line_exit_2(capsys, [*argv, *TRAIN], f"backbone.vision_path {llm_dir} holds a 'qwen2' model")
    # A missing LM directory is one line too.
    arch = architecture(vision_dir, tmp_path / "nowhere", "layers", [1, 2])
    (tmp_path / "nowhere.json").write_text(json.dumps(arch))
    argv[-1] = str(tmp_path / "nowhere.json")
    _one_line_exit_2(capsys, [*argv, *TRAIN], "backbone.llm_path", "no config.json there")


def test_last_layer_bridge_trains_exports_and_runs_beside_the_layerwise_one(
    towers, dataset, layerwise, tmp_path
):
    import onnxruntime

    last = trained_bundle(tmp_path, towers, dataset, "concat", [-1])
    shapes, chunks, export_error = {}, {}, 0.0
    for name, (checkpoint, bundle) in {"layers": layerwise, "last": last}.items():
        got, expected, _onboard, _torch_tokens = onnx_and_torch_chunks(checkpoint, bundle, "open the drawer")
        np.testing.assert_allclose(got, expected, atol=1e-4)
        export_error = max(export_error, float(np.abs(got - expected).max()))
        head = onnxruntime.InferenceSession(str(bundle / "head.onnx"), providers=["CPUExecutionProvider"])
        shapes[name] = next(i.shape for i in head.get_inputs() if i.name == "bridge")
        chunks[name] = got
    # 2 images x 16 patches + 4 queries per layer: two layers, one per head block, against the last layer alone.
    assert shapes == {"layers": [1, 2, 36, 64], "last": [1, 36, 64]}
    # Same data, seed and towers: only the bridge differs, and so do the chunks, by far more than the export's
    # numerical error (two training steps barely open the head's AdaLN-Zero gates, so not by much more:
    # test_bridge.py compares the two bridges on the same weights with the gates open).
    assert np.abs(chunks["layers"] - chunks["last"]).max() > 10 * export_error


def test_the_tokenizer_defaults_to_the_lms_and_legacy_pretrained_dir_reads_as_the_two_paths(tmp_path):
    from pydantic import ValidationError

    from policy_runtime.model.config import BackboneConfig

    assert BackboneConfig(vision_path="v", llm_path="lm").tokenizer == "lm"
    assert BackboneConfig(vision={"hidden_size": 8}, llm={"hidden_size": 8}).tokenizer == "bytes"
    legacy = BackboneConfig.model_validate({"pretrained_dir": str(tmp_path), "tokenizer": "bytes"})
    assert (legacy.vision_path, legacy.llm_path) == (str(tmp_path / "vision"), str(tmp_path / "llm"))
    assert legacy.tokenizer == "bytes"
    with pytest.raises(ValidationError, match=r"backbone.llm \(its sizes\) or backbone.llm_path"):
        BackboneConfig(vision_path="v")
