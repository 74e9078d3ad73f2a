"""`anchorvla verify BUNDLE [--data EPISODES]`: every variant of the bundle against the FP32 torch reference.

With torch and the checkpoint (the workstation) the reference is computed on held-out observations and stored in
the bundle (tools/references.py); without either (the board, after `build-trt`) the stored observations and
outputs are the reference, so ONNX Runtime and TensorRT variants are verified where they run, without torch.

On held-out observations (never the calibration ones) it measures, per graph fed with the reference's inputs,
cosine and max abs error (head: also anchor-selection agreement), and end to end (the variant's backbone
feeding its head): chunk cosine, anchor-selection agreement and the per-channel action error in SI units.
Gates: backbone cosine >= 0.999 (FP16) / >= 0.99 (INT8, INT4), chunk cosine >= 0.99, anchor agreement >= 0.98
(a pick the reference scores within `ANCHOR_TIE_LOGITS` of its best agrees: a tie; strict agreement is reported
too), and with a gripper head (AnchorRefine) gripper open/close sign agreement >= 0.98.
Figures, gates and the verdict go into the manifest; the runtime refuses a variant that did not pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from policy_runtime.bundle import (
    ANCHOR_AGREEMENT_GATE,
    ANCHOR_TIE_LOGITS,
    BACKBONE_COS_GATE,
    CHUNK_COS_GATE,
    GRIPPER_AGREEMENT_GATE,
    BundleError,
    Manifest,
    checkpoint_sha256,
    read_manifest,
)
from tools.bundle_samples import HELD_OUT_SEED, Sample, observation_samples
from tools.onnx_files import compare
from tools.references import Reference, load_references, save_references


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="recorded dataset of held-out observations (policy_runtime/dataset.py format; not the calibration episodes)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="the source checkpoint (default: as in the manifest)"
    )
    parser.add_argument("--count", type=int, default=50, help="held-out observations")
    parser.add_argument("--variants", nargs="+", default=None, help="variants to verify (default: all)")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for torch and ONNX Runtime (0: default)"
    )
    parser.add_argument(
        "--reference",
        choices=["auto", "torch", "stored"],
        default="auto",
        help="torch: compute it from the checkpoint (and store it); stored: the bundle's references; "
        "auto: torch where torch and the checkpoint are, else stored",
    )


def torch_reference(policy, samples: list[Sample]) -> Reference:
    """FP32 torch outputs on the samples, computed once for all variants."""
    import torch

    ref = Reference()
    t = torch.from_numpy
    with torch.no_grad():
        for s in samples:
            if s.images is not None:
                delta = None if s.proprio_delta is None else t(s.proprio_delta)
                bridge = policy.condition(
                    t(s.proprio), t(s.images), t(s.input_ids), t(s.attention_mask), delta
                )
            else:
                bridge = policy.condition(t(s.proprio))
            chunk, index, scores, _cand, context = policy.head.sample(bridge, t(s.proprio), t(s.noise))
            if policy.gripper_head is not None:
                ref.gripper.append(policy.gripper_head(context, t(s.proprio), chunk).numpy())
            planned = chunk[:, 1 % chunk.shape[1]]
            correction = policy.residual(t(s.proprio), context, planned, torch.tensor([1]))
            ref.bridge.append(bridge.numpy())
            ref.head.append((chunk.numpy(), index.numpy(), scores.numpy(), context.numpy()))
            ref.residual.append((planned.numpy(), correction.numpy()))
    return ref


def reference_choice(choice: str, manifest: Manifest, checkpoint: Path | None) -> tuple[str, str]:
    """('torch' | 'stored', why) for --reference `choice`."""
    checkpoint = Path(checkpoint or manifest.source_checkpoint.path)
    if choice != "auto":
        return choice, f"--reference {choice}"
    try:
        import torch  # noqa: F401
    except Exception as exc:  # absent, or a broken build (a missing CUDA library raises OSError)
        return "stored", f"torch cannot be imported here ({type(exc).__name__})"
    if not (checkpoint / "config.json").is_file():
        return "stored", f"the checkpoint {checkpoint} is not here"
    return "torch", f"torch and the checkpoint {checkpoint} are here"


def _mean_compare(pairs) -> dict[str, float]:
    figures = [compare(a, b) for a, b in pairs]
    cos = [f["cosine"] for f in figures]
    return {"cosine": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
            "max_abs": float(max(f["max_abs"] for f in figures))}  # fmt: skip


def same_anchor(reference_scores: np.ndarray, pick: int) -> bool:
    """Whether a variant's anchor `pick` is the reference's choice: its best, or one it scores as a tie."""
    return bool(reference_scores[pick] >= reference_scores.max() - ANCHOR_TIE_LOGITS)


def _agreement(ref_heads, heads) -> tuple[float, float]:
    """(tie-aware, strict) share of observations whose anchor choice agrees with the reference's."""
    pairs = list(zip(ref_heads, heads, strict=True))
    tie_aware = np.mean([same_anchor(r[2][0], int(h[1][0])) for r, h in pairs])
    strict = np.mean([r[1][0] == h[1][0] for r, h in pairs])
    return float(tie_aware), float(strict)


def _variant_engine(bundle: Path, manifest: Manifest, name: str, threads: int):
    if manifest.variants[name].format == "tensorrt":
        from policy_runtime.engines.tensorrt_engine import TensorRTEngine

        return TensorRTEngine(bundle, precision=name.removeprefix("trt-"), force_unverified=True)
    from policy_runtime.engines.onnx_engine import OnnxEngine

    return OnnxEngine(bundle, precision=name, threads=threads, providers="cpu", force_unverified=True)


def verify_variant(engine, manifest: Manifest, samples: list[Sample], ref: Reference, precision: str):
    """-> (per-role figures, end-to-end figures, gates, passed)."""
    anchored = manifest.runtime.mode == "anchored"
    bridges = [engine.condition(s.backbone_feed()) for s in samples]
    backbone = _mean_compare(zip(ref.bridge, bridges, strict=True))
    head_out = [engine.head(rb, s.proprio, s.noise) for rb, s in zip(ref.bridge, samples, strict=True)]
    head = _mean_compare((r[0], h[0]) for r, h in zip(ref.head, head_out, strict=True))
    head["anchor_agreement"], head["anchor_agreement_strict"] = _agreement(ref.head, head_out)
    residual = _mean_compare(
        (r[1], engine.residual_normalized(s.proprio, ref_head[3], r[0], 1))
        for r, s, ref_head in zip(ref.residual, samples, ref.head, strict=True)
    )
    e2e = [engine.head(b, s.proprio, s.noise) for b, s in zip(bridges, samples, strict=True)]
    chunk = _mean_compare((r[0], e[0]) for r, e in zip(ref.head, e2e, strict=True))
    agreement, strict_agreement = _agreement(ref.head, e2e)
    si_err = np.max(
        [
            np.abs(engine.inputs.to_si(e[0][0]) - engine.inputs.to_si(r[0][0]))
            for r, e in zip(ref.head, e2e, strict=True)
        ],
        axis=(0, 1),
    )
    end_to_end = {"chunk_cosine": chunk["cosine"], "chunk_cosine_min": chunk["cosine_min"],
                  "chunk_max_abs": chunk["max_abs"], "anchor_agreement": agreement,
                  "anchor_agreement_strict": strict_agreement,
                  "action_max_abs_si": [float(v) for v in si_err], "samples": len(samples)}  # fmt: skip
    if ref.gripper:  # the share of chunk steps whose open/close sign the variant keeps
        end_to_end["gripper_sign_agreement"] = float(
            np.mean([np.mean((r > 0) == (e[4] > 0)) for r, e in zip(ref.gripper, e2e, strict=True)])
        )
    gates = {"backbone_cosine": BACKBONE_COS_GATE[precision], "chunk_cosine": CHUNK_COS_GATE}
    passed = backbone["cosine"] >= gates["backbone_cosine"] and chunk["cosine"] >= CHUNK_COS_GATE
    if anchored:
        gates["anchor_agreement"] = ANCHOR_AGREEMENT_GATE
        passed = passed and agreement >= ANCHOR_AGREEMENT_GATE
    if ref.gripper:
        gates["gripper_sign_agreement"] = GRIPPER_AGREEMENT_GATE
        passed = passed and end_to_end["gripper_sign_agreement"] >= GRIPPER_AGREEMENT_GATE
    return {"backbone": backbone, "head": head, "residual": residual}, end_to_end, gates, passed


def verify_bundle(
    bundle: Path,
    samples: list[Sample] | None,
    checkpoint: Path | None = None,
    variants: list[str] | None = None,
    threads: int = 0,
    source: str | None = None,
) -> Manifest:
    """Verify the variants; with `samples` against the torch reference on them (stored in the bundle, `source`
    says where they came from), with None against the bundle's stored references (no torch)."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if samples is None:
        samples, ref = load_references(bundle, manifest)
    else:
        ref = _torch_reference_of(bundle, manifest, samples, checkpoint, threads)
        save_references(
            bundle, manifest, samples, ref, source or f"{len(samples)} observations given to verify"
        )
    names = variants or list(manifest.variants)
    unknown = [n for n in names if n not in manifest.variants]
    if unknown:
        raise UserError(
            f"--variants {unknown}: not in the bundle (available: {', '.join(manifest.variants)})"
        )
    for name in names:
        variant = manifest.variants[name]
        precision = manifest.graphs[variant.graphs["backbone"]].precision
        try:
            engine = _variant_engine(bundle, manifest, name, threads)
        except BundleError:
            raise
        except Exception as exc:  # e.g. an op this onnxruntime build has no kernel for
            variant.status = "unverified"
            variant.verification = {"not_run": f"cannot run here: {str(exc).splitlines()[0][:200]}"}
            print(f"  {name}: not verified here ({variant.verification['not_run']})")
            continue
        roles, e2e, gates, passed = verify_variant(engine, manifest, samples, ref, precision)
        engine.close()
        for role, figures in roles.items():
            manifest.graphs[variant.graphs[role]].verification.update(figures)
        variant.verification, variant.gates = e2e, gates
        variant.status = "passed" if passed else "failed"
    manifest.write(bundle)
    return manifest


def _torch_reference_of(bundle: Path, manifest: Manifest, samples, checkpoint, threads: int) -> Reference:
    from policy_runtime.model.checkpoint import load_checkpoint

    checkpoint = Path(checkpoint or manifest.source_checkpoint.path)
    if checkpoint_sha256(checkpoint) != manifest.source_checkpoint.sha256:
        raise BundleError(
            f"bundle {bundle} was made from another checkpoint than {checkpoint} "
            f"(manifest names {manifest.source_checkpoint.path}); verify against its own checkpoint or re-export"
        )
    if threads:
        import torch

        torch.set_num_threads(threads)
    policy, _config = load_checkpoint(checkpoint)
    return torch_reference(policy, samples)


def print_table(manifest: Manifest, names: list[str]) -> None:
    gripper = manifest.runtime.gripper is not None
    header = (
        f"{'variant':<9}{'backbone cos':>14}{'head cos':>10}{'chunk cos':>11}{'anchor agr':>12}{'strict':>8}"
    )
    header += f"{'gripper agr':>13}" if gripper else ""
    header += f"{'max |err| SI':>14}  status"
    print(header)
    print("-" * len(header))
    for name in names:
        v = manifest.variants[name]
        if "chunk_cosine" not in v.verification:
            print(f"{name:<9}{'':>{len(header) - 17}}  {v.status} {v.verification.get('not_run', '')}")
            continue
        bb = manifest.graphs[v.graphs["backbone"]].verification
        hd = manifest.graphs[v.graphs["head"]].verification
        e = v.verification
        grip = f"{e['gripper_sign_agreement']:>13.3f}" if gripper else ""
        print(f"{name:<9}{bb['cosine']:>14.6f}{hd['cosine']:>10.5f}{e['chunk_cosine']:>11.5f}"
              f"{e['anchor_agreement']:>12.3f}{e['anchor_agreement_strict']:>8.3f}{grip}"
              f"{max(e['action_max_abs_si']):>14.4f}  {v.status}")  # fmt: skip
    failed = [n for n in names if manifest.variants[n].status == "failed"]
    if failed:
        print(f"failed gates: {', '.join(failed)} (the runtime refuses them unless policy.force_unverified)")


def main(args: argparse.Namespace) -> int:
    manifest = read_manifest(args.bundle)
    reference, why = reference_choice(args.reference, manifest, args.checkpoint)
    samples = where = None
    if reference == "torch":
        samples, where = observation_samples(
            manifest.runtime, args.bundle, args.data, args.count, HELD_OUT_SEED
        )
        print(f"reference: FP32 torch ({why}); held-out observations: {where}")
    else:
        stored = manifest.references
        what = f"{stored.samples} held-out observations, {stored.source}" if stored else "none stored"
        print(f"reference: the FP32 outputs stored in the bundle ({why}); {what}")
        if args.data is not None:
            print("note: --data is not used with the stored reference (its observations are fixed)")
    manifest = verify_bundle(args.bundle, samples, args.checkpoint, args.variants, args.threads, where)
    names = args.variants or list(manifest.variants)
    print_table(manifest, names)
    return 0 if all(manifest.variants[n].status != "failed" for n in names) else 1
