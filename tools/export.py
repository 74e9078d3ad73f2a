"""`anchorvla export CHECKPOINT OUT`: the checkpoint as three ONNX graphs plus manifest.json.

- backbone.onnx: images + instruction tokens -> bridge features (the Mamba backbone also takes proprio and the
  state delta; without a VLM backbone: proprio -> state tokens); the layer-wise bridge is one (1, layers, N, C)
  tensor, the head's blocks each reading their layer;
- head.onnx: bridge + proprio + noise -> chunk, anchor index, scores, residual context (and, with AnchorRefine's
  gripper head, its per-step open/close logits): the whole truncated denoising loop over all anchors and the
  scoring in one graph, so one engine call makes one chunk; the anchored head also takes the real-time chunking
  prefix (`prefix` (1, H, d), `prefix_length` (1,) int64, `prefix_score_weight` (1,); length 0: no prefix), and
  the manifest's `runtime.prefix_conditioning` says so;
- residual.onnx: proprio + context + planned action + j -> correction.

Shapes are fixed at batch 1 (the onboard process runs one observation at a time; TensorRT likes static shapes).
Each graph is run through ONNX Runtime on a sample as it is written and compared with torch; the figures go
into the manifest. The bundle's 'fp32' variant is left 'unverified' until `anchorvla verify` runs its gates.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import (
    GripperSpec,
    ImageSpec,
    Manifest,
    RuntimeSpec,
    SourceCheckpoint,
    TokenizerSpec,
    VariantEntry,
    checkpoint_sha256,
)
from tools import onnx_tensor_split
from tools.bundle_samples import CALIBRATION_SEED, synthetic_samples
from tools.onnx_files import compare, graph_entry, ort_session, save_graph

log = logging.getLogger("anchorvla.export")
OPSET = 17  # LayerNormalization stays one op (FP16 keeps it in fp32 whole)
EXPORT_CHECK_COSINE = 0.9999  # ORT FP32 against torch FP32 on the same sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json + safetensors)")
    parser.add_argument(
        "out", type=Path, help="bundle directory to write (created; must be empty if it exists)"
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (>= 17, default {OPSET})")


def runtime_spec(config, out: Path, margin: float | None = None) -> RuntimeSpec:
    """What the onboard process needs besides the graphs; copies a tokenizer.json into the bundle if used.
    `margin`: the gripper head's learned hysteresis margin (a weight of the checkpoint), when it has one."""
    arch = config.architecture
    head = arch.head
    k = head.num_anchors if head.mode == "anchored" else 1
    image = tokenizer = None
    if arch.backbone is not None:
        bb = arch.backbone
        image = ImageSpec(
            size=arch.image_size, mean=arch.image_mean, std=arch.image_std, num_images=bb.num_images,
            anchor_image=bb.anchor_image,
        )  # fmt: skip
        tokenizer = _bundle_tokenizer(bb.tokenizer, bb.max_instruction_tokens, out)
    n = config.normalization
    gripper = None
    if arch.gripper_head is not None:
        g = arch.gripper_head.channel_index
        open_value = None if arch.gripper_head.open_follows_plan else n.action_high[g]
        gripper = GripperSpec(channel=g, margin=margin, closed_value=n.action_low[g], open_value=open_value)
    return RuntimeSpec(
        action_layout=config.action_layout,
        proprio_layout=config.proprio_layout,
        cameras=config.cameras,
        dt_s=config.dt_s,
        action_low=n.action_low,
        action_high=n.action_high,
        proprio_mean=n.proprio_mean,
        proprio_std=n.proprio_std,
        proprio_delta_std=n.proprio_delta_std,
        image=image,
        tokenizer=tokenizer,
        noise_shape=[1, k, head.horizon, head.action_dim],
        mode=head.mode,
        gripper=gripper,
        prefix_conditioning=head.mode == "anchored",
    )


def prefix_sample(spec: RuntimeSpec, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A real-time chunking prefix for the export check: random actions over the first half of the chunk, weight 1."""
    _batch, _k, horizon, action_dim = spec.noise_shape
    prefix = np.random.default_rng(seed).uniform(-1, 1, (1, horizon, action_dim)).astype(np.float32)
    return prefix, np.array([horizon // 2], np.int64), np.ones(1, np.float32)


def _bundle_tokenizer(name: str, length: int, out: Path) -> TokenizerSpec:
    """The checkpoint's tokenizer as the bundle's tokenizer.json (its pad token saved in it), read onboard with
    `tokenizers` alone."""
    from policy_runtime.model.tokenizer import TOKENIZER_FILE, build_tokenizer

    if name == "bytes":
        return TokenizerSpec(kind="bytes", length=length)
    tokenizer = build_tokenizer(name)
    tokenizer.save(out / TOKENIZER_FILE)
    return TokenizerSpec(kind="tokenizers", length=length, file=TOKENIZER_FILE, pad_id=tokenizer.pad_id)


def _graph_modules(policy):
    import torch
    from torch import nn

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, images, input_ids, attention_mask):
            return self.policy.backbone(images, input_ids, attention_mask)

    class StateDeltaBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, images, input_ids, attention_mask, proprio, proprio_delta):
            return self.policy.backbone(images, input_ids, attention_mask, proprio, proprio_delta)

    class StateBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.policy = policy

        def forward(self, proprio):
            return self.policy.state_encoder(proprio)

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = policy.head
            self.gripper_head = policy.gripper_head

        def forward(self, bridge, proprio, noise, *prefix):
            """`prefix`: nothing, or (prefix, prefix_length, prefix_score_weight) (`AnchoredDiffusionHead.sample`)."""
            chunk, index, scores, _candidates, context = self.head.sample(
                bridge, proprio, noise, None, *prefix
            )
            if self.gripper_head is None:
                return chunk, index, scores, context
            return chunk, index, scores, context, self.gripper_head(context, proprio, chunk)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.residual = policy.residual

        def forward(self, proprio, context, planned, j):
            return self.residual(proprio, context, planned, j)

    if policy.backbone is None:
        backbone = StateBackbone()
    else:
        backbone = StateDeltaBackbone() if policy.reads_state_delta else Backbone()
    return backbone, Head(), Residual(), torch


def _export_one(module, args, names_in, names_out, directory: Path, file: str, opset: int, ckpt_sha: str):
    import onnx
    import torch

    onnx_tensor_split.register()
    with tempfile.TemporaryDirectory(dir=directory) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = Path(tmp) / file
        torch.onnx.export(
            module, args, str(raw), dynamo=False, opset_version=opset,
            input_names=names_in, output_names=names_out, do_constant_folding=True,
        )  # fmt: skip
        model = onnx.load(str(raw))  # pulls in any external data torch wrote beside it
        onnx_tensor_split.fold_sequences(model)
        return save_graph(model, directory, file, ckpt_sha)


def export_policy(
    policy, config, out: Path, checkpoint_path: str, ckpt_sha: str, opset: int = OPSET
) -> Manifest:
    """Export an in-memory policy (eval mode) into `out` and write its manifest."""
    if opset < 17:
        raise UserError(f"--opset {opset}: needs >= 17 (LayerNormalization as one op)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    margin = float(policy.gripper_head.margin.detach()) if policy.gripper_head is not None else None
    spec = runtime_spec(config, out, margin)
    backbone, head, residual, torch = _graph_modules(policy)
    sample = synthetic_samples(spec, out, 1, CALIBRATION_SEED)[0]
    t = torch.from_numpy
    manifest = Manifest(
        source_checkpoint=SourceCheckpoint(path=str(checkpoint_path), sha256=ckpt_sha), runtime=spec
    )
    with torch.no_grad():
        if sample.images is not None:
            bb_args = (t(sample.images), t(sample.input_ids), t(sample.attention_mask))
            bb_in = ["images", "input_ids", "attention_mask"]
            if sample.proprio_delta is not None:
                bb_args += (t(sample.proprio), t(sample.proprio_delta))
                bb_in += ["proprio", "proprio_delta"]
        else:
            bb_args, bb_in = (t(sample.proprio),), ["proprio"]
        bridge = backbone(*bb_args)
        head_args = (bridge, t(sample.proprio), t(sample.noise))
        head_in = ["bridge", "proprio", "noise"]
        if spec.prefix_conditioning:
            head_args += tuple(t(a) for a in prefix_sample(spec, CALIBRATION_SEED))
            head_in += ["prefix", "prefix_length", "prefix_score_weight"]
        head_out = head(*head_args)
        chunk, index, scores, context = head_out[:4]
        j = torch.tensor([1], dtype=torch.long)
        correction = residual(t(sample.proprio), context, chunk[:, 1], j)
    plan = [
        ("backbone", backbone, bb_args, bb_in, ["bridge"], [bridge]),
        ("head", head, head_args, head_in,
         ["chunk", "anchor_index", "scores", "context", "gripper_logits"][: len(head_out)], list(head_out)),
        ("residual", residual, (t(sample.proprio), context, chunk[:, 1], j), ["proprio", "context", "planned", "j"],
         ["correction"], [correction]),
    ]  # fmt: skip
    graphs = {}
    for role, module, args, names_in, names_out, reference in plan:
        file = f"{role}.onnx"
        log.info("exporting %s", file)
        external = _export_one(module, args, names_in, names_out, out, file, opset, ckpt_sha)
        session = ort_session(out / file)
        taken = {i.name for i in session.get_inputs()}  # the export drops inputs a graph does not use
        got = session.run(None, {n: a.numpy() for n, a in zip(names_in, args, strict=True) if n in taken})
        figures = compare(reference[0].numpy(), got[0])
        if role == "head":
            figures["anchor_match"] = bool(np.array_equal(got[1], reference[1].numpy()))
            if len(got) > 4:
                figures["gripper_logits_max_abs"] = float(np.max(np.abs(got[4] - reference[4].numpy())))
        passed = figures["cosine"] >= EXPORT_CHECK_COSINE and figures.get("anchor_match", True)
        if not passed:
            raise UserError(
                f"export check failed for {file}: ONNX Runtime vs torch cosine {figures['cosine']:.6f} "
                f"(needs >= {EXPORT_CHECK_COSINE}); report this with the checkpoint"
            )
        verification = {f"export_check_{k}": v for k, v in figures.items()}
        manifest.graphs[file] = graph_entry(out, file, role, "fp32", "export", external, verification)
        graphs[role] = file
        print(
            f"  {file:<14} ORT vs torch on a sample: cosine {figures['cosine']:.6f}, max abs {figures['max_abs']:.2e}"
        )
    manifest.variants["fp32"] = VariantEntry(graphs=graphs)
    if spec.tokenizer is not None and spec.tokenizer.file:
        from policy_runtime.bundle import sha256_file

        manifest.files[spec.tokenizer.file] = sha256_file(out / spec.tokenizer.file)
    manifest.write(out)
    return manifest


def main(args: argparse.Namespace) -> int:
    from policy_runtime.model.checkpoint import load_checkpoint

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty: choose a new bundle directory")
    policy, config = load_checkpoint(args.checkpoint)
    print(f"exporting {args.checkpoint} -> {out} (opset {args.opset})")
    ckpt_sha = checkpoint_sha256(args.checkpoint)
    export_policy(policy, config, out, str(args.checkpoint), ckpt_sha, args.opset)
    print(f"source checkpoint sha256 {ckpt_sha} (pin it with policy.checkpoint_sha256)")
    print(
        f"wrote {out / 'manifest.json'}; next: `anchorvla quantize {out} --precision int8`, `anchorvla verify {out}`"
    )
    return 0
