"""`anchorvla train`: stage 1 (LoRA + projector + queries + head: reconstruction + anchor classification), then
optionally AnoleVLA's smoothness stage (`--smooth-steps N`: the same parameters fine-tuned with the head's loss +
the velocity and the acceleration term of the predicted chunk, weights `--smooth-velocity-weight` and
`--smooth-accel-weight`, policy_runtime/model/smoothness.py), then the residual stage (the residual
only, L1 on the correction, the rest frozen), then with `--gripper-head` the gripper stage (AnchorRefine's gripper
head alone, on the finished policy's plans), from a recorded dataset (policy_runtime/dataset.py) into a checkpoint
directory (policy_runtime/model/checkpoint.py). `--residual-from` and `--gripper-from` train one of the last two
stages alone onto a finished checkpoint.

Deterministic for a seed (batches and noise come from seeded CPU generators). Resumable: `--resume` continues
from the checkpoint and `training_state.pt` (optimizer, step, generators; read with weights_only) in --out.
Several processes: run it under `torchrun --nproc-per-node N -m anchorvla.cli train ...` (NCCL on GPUs, gloo on
CPU); every rank draws the same batch indices and trains on its share with its own noise stream (each saved, so
--resume continues every rank's), DDP averages the gradients, the logged figures are the global batch's (the ranks'
averaged), rank 0 writes. Each stage ends with one line: its figures' mean over its last 100 steps.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import json
import math
import os
from pathlib import Path

import numpy as np

from anchorvla.errors import UserError
from tools import dataset_args

STATE_FILE = "training_state.pt"
SUMMARY_STEPS = 100  # each stage ends with the mean of its logged figures over this many last steps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, type=Path,
        help="LeRobotDataset directory (v3.0 or v2.1; ours or LeRobot's, see policy_runtime/dataset.py)",
    )  # fmt: skip
    dataset_args.add_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    parser.add_argument(
        "--architecture", default="tiny", help="tiny | paper | PATH to an ArchitectureConfig JSON"
    )
    parser.add_argument(
        "--anchors", type=Path, default=None, help="anchors dir from `anchorvla anchors` (default: fit)"
    )
    parser.add_argument("--horizon", type=int, default=8, help="H, actions per chunk")
    parser.add_argument("--num-anchors", type=int, default=20, help="M when fitting anchors here")
    parser.add_argument("--steps", type=int, default=300, help="stage-1 steps")
    parser.add_argument(
        "--smooth-steps", type=int, default=0,
        help="steps of the smoothness stage after stage 1 (0: skip; AnoleVLA's stage 2)",
    )  # fmt: skip
    parser.add_argument(
        "--smooth-velocity-weight", type=float, default=1.0,
        help="weight of the L1 on the chunk's velocities (first differences from the current state)",
    )  # fmt: skip
    parser.add_argument(
        "--smooth-accel-weight", type=float, default=1.0,
        help="weight of the L1 on the chunk's accelerations (second differences; AnoleVLA's lambda_acc)",
    )  # fmt: skip
    # The first-difference loss these named "acceleration" is now the velocity term: refused, with the new flags.
    parser.add_argument("--accel-steps", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--accel-weight", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--residual-steps", type=int, default=100, help="residual-stage steps (0: skip)")
    parser.add_argument(
        "--gripper-steps", type=int, default=1000, help="gripper-stage steps (with --gripper-head)"
    )
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument(
        "--lr-schedule", choices=("constant", "cosine"), default="constant",
        help="cosine: each stage warms up over its first 2%% of steps, then decays to 5%% of --lr at its end "
        "(give it again with --resume)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=100, help="write the checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument(
        "--residual-from", type=Path, default=None, metavar="CHECKPOINT",
        help="train only a new residual for this checkpoint (its backbone, head, anchors and normalisation), on "
        "--dataset (e.g. from `anchorvla sim record --policy`), into --out",
    )  # fmt: skip
    parser.add_argument(
        "--gripper-from", type=Path, default=None, metavar="CHECKPOINT",
        help="train only a new gripper head (--gripper-head CHANNEL) on this checkpoint's plans, into --out",
    )  # fmt: skip
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="save and stop after N steps in this run (time-boxed jobs; --resume continues)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--anchor-image", action="store_true",
        help="AnchorVLA4D: feed each camera's first frame of the episode beside the current one",
    )  # fmt: skip
    parser.add_argument(
        "--spatial-encoder", action="store_true",
        help="AnchorVLA4D's spatial encoder over each camera's current frame and anchor image (the default sizes "
        "of backbone.spatial_encoder; turns --anchor-image on)",
    )  # fmt: skip
    parser.add_argument(
        "--gripper-head", default=None, metavar="CHANNEL",
        help="AnchorRefine: a discrete open/close head for this action channel (e.g. arm.gripper)",
    )  # fmt: skip
    parser.add_argument(
        "--gripper-open-follows-plan", action="store_true",
        help="with --gripper-head: while the decision is 'open' the plan's gripper channel runs (config only)",
    )  # fmt: skip
    parser.add_argument(
        "--proprio-exclude", default="", metavar="CHANNELS",
        help="comma-separated proprio channels the policy must not read (e.g. base.vx,base.vy,base.wz); "
        "the checkpoint's proprio layout leaves them out, so onboard they are never read either",
    )  # fmt: skip
    parser.add_argument(
        "--goal-probe", type=float, default=0.0, metavar="WEIGHT",
        help="learn to find the goal: goal.x/y/z leave the proprio (a dataset recorded with `sim record "
        "--goal-label`) and become the label of a training-only probe on the ActionQuery tokens, its squared "
        "error weighted WEIGHT in stages 1-2 (0: off)",
    )  # fmt: skip
    parser.add_argument(
        "--llm-training", choices=("lora", "full"), default=None,
        help="backbone.llm_training: LoRA adapters, or every LM weight (AnoleVLA fine-tunes its Mamba fully); "
        "default: the architecture's",
    )  # fmt: skip
    parser.add_argument(
        "--vision-training", choices=("frozen", "full"), default=None,
        help="backbone.vision_training: keep the vision tower's weights, or train them; default: the architecture's",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _architecture(args: argparse.Namespace, data):
    from pydantic import ValidationError

    from policy_runtime.model.config import ArchitectureConfig
    from policy_runtime.model.presets import paper_architecture, tiny_architecture

    d, p = len(data.action_layout), len(data.proprio_layout)
    if args.architecture == "tiny":
        arch = tiny_architecture(d, p, horizon=args.horizon, num_anchors=args.num_anchors)
    elif args.architecture == "paper":
        arch = paper_architecture(d, p, horizon=args.horizon)
    else:
        path = Path(args.architecture)
        if not path.is_file():
            raise UserError(f"--architecture {path}: not 'tiny', 'paper' or an existing JSON file")
        try:
            arch = ArchitectureConfig.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise UserError(f"--architecture {path}: {exc.errors()[0]['msg']}") from None
    # The dataset fixes the head's sizes; anchors from `anchorvla anchors` fix M.
    num_anchors = args.num_anchors
    if args.anchors is not None:
        meta_path = args.anchors / "anchors.json"
        if not meta_path.is_file():
            raise UserError(f"--anchors {args.anchors}: no anchors.json (make it with `anchorvla anchors`)")
        num_anchors = int(json.loads(meta_path.read_text())["count"])
    head = dict(
        arch.head.model_dump(), horizon=args.horizon, action_dim=d, proprio_dim=p, num_anchors=num_anchors
    )
    try:
        arch = ArchitectureConfig.model_validate(dict(arch.model_dump(), head=head))
    except ValidationError as exc:
        raise UserError(f"architecture: {exc.errors()[0]['msg']}") from None
    arch = _options(args, arch, data)
    if arch.backbone is not None and arch.backbone.num_images != len(data.cameras):
        raise UserError(
            f"the architecture takes {arch.backbone.num_images} images; the dataset has cameras {list(data.cameras)}"
        )
    return arch


def _options(args: argparse.Namespace, arch, data):
    """The related methods' options: the anchor image and the spatial encoder (AnchorVLA4D), the gripper head
    (AnchorRefine), and what of the backbone's towers trains (LoRA or the whole LM, as AnoleVLA; frozen or
    trained vision)."""
    from pydantic import ValidationError

    from policy_runtime.model.config import ArchitectureConfig, SpatialEncoderConfig

    update = {}
    backbone = {
        field: value
        for field, value in (
            ("anchor_image", True if args.anchor_image or args.spatial_encoder else None),
            ("spatial_encoder", SpatialEncoderConfig() if args.spatial_encoder else None),
            ("llm_training", args.llm_training),
            ("vision_training", args.vision_training),
        )
        if value is not None
    }
    if backbone:
        if arch.backbone is None:
            flags = ", ".join("--" + field.replace("_", "-") for field in backbone)
            raise UserError(f"{flags}: needs an architecture with a backbone (images)")
        update["backbone"] = arch.backbone.model_copy(update=backbone)
    if args.gripper_head is not None:
        update["gripper_head"] = _gripper_head(args, data.action_layout)
    if args.goal_probe > 0:
        update["goal_probe"] = True
    try:  # validated again: an option may not fit the rest of the architecture
        return ArchitectureConfig.model_validate(arch.model_copy(update=update).model_dump())
    except ValidationError as exc:
        raise UserError(f"architecture with the options: {exc.errors()[0]['msg']}") from None


def _gripper_head(args: argparse.Namespace, action_layout: list[str]):
    from policy_runtime.model.config import GripperHeadConfig

    if args.gripper_head not in action_layout:
        raise UserError(
            f"--gripper-head {args.gripper_head}: not an action channel ({', '.join(action_layout)})"
        )
    if args.gripper_steps < 1:
        raise UserError("--gripper-head trains in the gripper stage: give --gripper-steps >= 1")
    return GripperHeadConfig(
        channel_index=action_layout.index(args.gripper_head), open_follows_plan=args.gripper_open_follows_plan
    )


def _anchors(args: argparse.Namespace, data, arch):
    from policy_runtime.model.config import AnchorsMeta
    from tools.anchors import fit_anchors

    if args.anchors is None:
        anchors, sizes, coverage = fit_anchors(data.normalized_chunks(), arch.head.num_anchors, args.seed)
        return anchors, AnchorsMeta(
            count=len(sizes),
            horizon=args.horizon,
            cluster_sizes=sizes,
            coverage_l1=coverage,
            source="fit by train",
        )
    from safetensors.numpy import load_file

    files = load_file(str(args.anchors / "anchors.safetensors"))
    meta = json.loads((args.anchors / "anchors.json").read_text())
    anchors = files["anchors"]
    if (
        anchors.shape[1:] != (args.horizon, len(data.action_layout))
        or anchors.shape[0] != arch.head.num_anchors
    ):
        raise UserError(
            f"{args.anchors}: anchors {anchors.shape} do not fit M={arch.head.num_anchors}, H={args.horizon}, d={len(data.action_layout)}"
        )
    if not np.allclose(files["action_low"], data.action_low) or not np.allclose(
        files["action_high"], data.action_high
    ):
        raise UserError(
            f"{args.anchors} was built with another normalization; rerun `anchorvla anchors` on this dataset"
        )
    return anchors, AnchorsMeta(
        count=meta["count"],
        horizon=meta["horizon"],
        cluster_sizes=meta["cluster_sizes"],
        coverage_l1=meta["coverage_l1"],
        source=str(args.anchors),
    )


def make_batch(data, indices: np.ndarray, arch, tokenizer, device) -> dict:
    """The tensors of training/batch format (policy_runtime/model/training.py) for the given samples."""
    import torch

    from policy_runtime.preprocess import preprocess_image

    def f32(a):
        return torch.tensor(np.asarray(a), dtype=torch.float32, device=device)

    batch = {
        "proprio": f32(data.normalize_proprio(data.proprio[indices])),
        "proprio_delta": f32(data.normalize_proprio_delta(data.proprio_delta[indices])),
        "actions": f32(data.normalize_actions(data.chunks[indices])),
        "future_proprio": f32(data.normalize_proprio(data.future_proprio[indices])),
    }
    if arch.backbone is not None:
        size = (arch.image_size, arch.image_size)
        raw = data.policy_images(indices, data.cameras, arch.backbone.anchor_image)
        images = [[preprocess_image(im, size, arch.image_mean, arch.image_std) for im in s] for s in raw]
        batch["images"] = torch.from_numpy(np.asarray(images, dtype=np.float32)).to(device)
        ids, mask = tokenizer.encode([data.tasks[i] for i in indices], arch.backbone.max_instruction_tokens)
        batch["input_ids"] = torch.from_numpy(ids).to(device)
        batch["attention_mask"] = torch.from_numpy(mask).to(device)
    if arch.goal_probe:
        batch["goal"] = f32(data.goal[indices])
    return batch


def main(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from policy_runtime.model.checkpoint import load_checkpoint
    from policy_runtime.model.config import CheckpointConfig, Normalization
    from policy_runtime.model.policy import AnchorVLAPolicy
    from policy_runtime.model.smoothness import SmoothnessWeights
    from policy_runtime.model.tokenizer import build_tokenizer
    from policy_runtime.model.training import (
        StageLoss,
        gripper_stage_loss,
        stage1_loss,
        stage2_loss,
        train_only,
    )

    for name in ("steps", "batch", "horizon", "save_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.accel_steps is not None or args.accel_weight is not None:
        raise UserError(
            "--accel-steps/--accel-weight (an L1 on first differences, a velocity term) are gone: use "
            "--smooth-steps N --smooth-velocity-weight V --smooth-accel-weight A"
        )
    if min(args.smooth_steps, args.smooth_velocity_weight, args.smooth_accel_weight, args.goal_probe) < 0:
        raise UserError(
            "--smooth-steps, --smooth-velocity-weight, --smooth-accel-weight and --goal-probe must be >= 0"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device("cpu")
    if world > 1:
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    if args.batch % world:
        raise UserError(f"--batch {args.batch} must be a multiple of the {world} processes")

    data = dataset_args.load(args, args.horizon)
    if args.proprio_exclude:
        data = data.without_proprio([n.strip() for n in args.proprio_exclude.split(",") if n.strip()])
    torch.manual_seed(args.seed)
    state_path = args.out / STATE_FILE
    if args.resume:
        if not state_path.is_file():
            raise UserError(f"--resume: {state_path} not found (train without --resume first)")
        policy, config = load_checkpoint(args.out)
        state = torch.load(state_path, weights_only=True)
        if state["stage"] <= 2 and config.provenance.get("accel_steps", 0) > 0:
            raise UserError(
                f"--resume: {args.out} was started with the old first-difference 'acceleration' stage, which no "
                "longer exists; train it again without --resume (--smooth-steps for the smoothness stage)"
            )
    elif args.residual_from is not None:
        if args.residual_steps < 1:
            raise UserError("--residual-from trains the residual stage alone: give --residual-steps >= 1")
        policy, config = load_checkpoint(args.residual_from, with_residual=False)  # a new, zero residual
        config = config.model_copy(
            update={
                "provenance": dict(
                    config.provenance,
                    residual_from=str(args.residual_from),
                    residual_dataset=str(args.dataset),
                )
            }
        )
        state = {"stage": 3, "step": 0}
    elif args.gripper_from is not None:
        if args.gripper_head is None:
            raise UserError("--gripper-from trains a gripper head alone: give --gripper-head CHANNEL")
        policy, config = load_checkpoint(args.gripper_from)
        gripper = _gripper_head(args, config.action_layout)
        policy.add_gripper_head(gripper)
        config = config.model_copy(
            update={
                "architecture": config.architecture.model_copy(update={"gripper_head": gripper}),
                "provenance": dict(
                    config.provenance, gripper_from=str(args.gripper_from), gripper_dataset=str(args.dataset)
                ),
            }
        )
        state = {"stage": 4, "step": 0}
    else:
        if args.goal_probe > 0:
            data = data.with_goal_as_label()
        arch = _architecture(args, data)
        policy = AnchorVLAPolicy(arch)
        anchors_meta = None
        if arch.head.mode != "linear":  # the linear head has no anchors
            anchors, anchors_meta = _anchors(args, data, arch)
            policy.head.anchors.copy_(torch.from_numpy(np.asarray(anchors)))
        config = CheckpointConfig(
            architecture=arch,
            action_layout=list(data.action_layout),
            proprio_layout=list(data.proprio_layout),
            cameras=list(data.cameras),
            dt_s=1.0 / data.fps,
            normalization=Normalization(
                action_low=data.action_low.tolist(),
                action_high=data.action_high.tolist(),
                proprio_mean=data.proprio_mean.tolist(),
                proprio_std=data.proprio_std.tolist(),
                proprio_delta_std=data.proprio_delta_std.tolist() if policy.reads_state_delta else None,
            ),  # fmt: skip
            anchors=anchors_meta,
            provenance={
                "trainer": "anchorvla train",
                "dataset": str(args.dataset),
                "samples": len(data),
                "proprio_excluded": [n for n in args.proprio_exclude.split(",") if n.strip()],
                "tasks": sorted(set(data.tasks)),
                "seed": args.seed,
                "batch": args.batch,
                "lr": args.lr,
                "lr_schedule": args.lr_schedule,
                "smooth_steps": args.smooth_steps,
                "smooth_velocity_weight": args.smooth_velocity_weight,
                "smooth_accel_weight": args.smooth_accel_weight,
                "gripper_steps": args.gripper_steps if args.gripper_head else 0,
                "goal_probe_weight": args.goal_probe,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        state = {"stage": 1, "step": 0}
    arch = config.architecture
    if arch.goal_probe and data.goal is None:  # a resumed run, or a new residual for a goal-probe policy
        data = data.with_goal_as_label()
    goal_weight = config.provenance.get("goal_probe_weight", 0.0)
    data = _with_normalization(data, config)
    policy.to(device)
    tokenizer = build_tokenizer(arch.backbone.tokenizer) if arch.backbone is not None else None
    index_gen = torch.Generator().manual_seed(args.seed)
    noise_gen = torch.Generator().manual_seed(args.seed * 1000 + rank + 1)
    if "index_gen" in state:
        index_gen.set_state(state["index_gen"])
        # Each rank's own noise stream (a file of an older trainer holds rank 0's alone; a rank the saved run did
        # not have keeps its fresh seed).
        saved = state.get("noise_gens") or [state["noise_gen"]]
        if rank < len(saved):
            noise_gen.set_state(saved[rank])

    # Stages by number: 1 main, 2 smoothness (main parameters again), 3 residual, 4 gripper head.
    stages = [(1, args.steps, functools.partial(stage1_loss, goal_weight=goal_weight))]
    if args.smooth_steps > 0:
        weights = SmoothnessWeights(args.smooth_velocity_weight, args.smooth_accel_weight)
        smooth = functools.partial(stage1_loss, smoothness=weights, goal_weight=goal_weight)
        stages.append((2, args.smooth_steps, smooth))
    if args.residual_steps > 0:
        stages.append((3, args.residual_steps, stage2_loss))
    if policy.gripper_head is not None:
        stages.append((4, args.gripper_steps, gripper_stage_loss))
    budget = args.stop_after
    for stage, steps, loss_fn in stages:
        if stage < state["stage"]:
            continue
        if budget is not None and budget <= 0:
            break
        if stage in (1, 2):
            # The residual and the gripper head learn later, on the finished plans: frozen here (DDP would find
            # them without gradient otherwise).
            params = policy.main_parameters()
            main = {id(p) for p in params}
            for p in policy.parameters():
                p.requires_grad_(id(p) in main)
        else:
            params = train_only(policy, "residual" if stage == 3 else "gripper_head")
        module = StageLoss(policy, loss_fn)
        if world > 1:
            # Only the anchored head's loss uses the scoring head; the other modes leave it without gradient.
            unused = stage in (1, 2) and arch.head.mode not in ("anchored", "linear")
            module = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=unused)
        optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
        start = state["step"] if stage == state["stage"] else 0
        if stage == state["stage"] and "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        policy.train()
        bar = tqdm(total=steps, initial=start, desc=f"stage {stage}", disable=args.no_progress or rank != 0)
        recent = collections.deque(maxlen=SUMMARY_STEPS)
        for step in range(start, steps):
            for group in optimizer.param_groups:
                group["lr"] = stage_lr(args.lr, args.lr_schedule, step, steps)
            indices = torch.randint(0, len(data), (args.batch,), generator=index_gen).numpy()[rank::world]
            loss, logs = module(make_batch(data, indices, arch, tokenizer, device), noise_gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            logs = _mean_over_ranks(logs, world, device)
            recent.append(logs)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            done = step + 1
            if budget is not None:
                budget -= 1
            stopping = budget is not None and budget <= 0
            if done % args.save_every == 0 or done == steps or stopping:
                noise_states = _gathered(noise_gen.get_state(), world)
                if rank == 0:
                    next_state = (
                        {"stage": stage, "step": done} if done < steps else {"stage": stage + 1, "step": 0}
                    )
                    optimizer_state = optimizer if done < steps else None
                    _save(args.out, policy, config, optimizer_state, next_state, index_gen, noise_states)
            if stopping:
                break
        bar.close()
        if rank == 0 and recent:
            means = {k: sum(step_logs[k] for step_logs in recent) / len(recent) for k in recent[-1]}
            figures = ", ".join(f"{k} {v:.4f}" for k, v in means.items())
            print(f"stage {stage}: {figures} (mean of its last {len(recent)} steps, global batch)")
        if budget is not None and budget <= 0:
            break
        state = {"stage": stage + 1, "step": 0}
    policy.eval()
    if world > 1:
        dist.barrier()  # no rank tears the group down while another still talks to it (rank 0 may be saving)
        dist.destroy_process_group()
    if rank == 0:
        print(
            f"wrote checkpoint {args.out} ({len(data)} samples, tasks: {', '.join(sorted(set(data.tasks)))})"
        )
    return 0


def stage_lr(peak: float, schedule: str, step: int, steps: int) -> float:
    """The learning rate of `step` (0-based) of a stage of `steps`: a function of the step alone, so a resumed run
    continues on the same curve."""
    if schedule == "constant":
        return peak
    warmup = max(1, steps // 50)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _with_normalization(data, config):
    """The dataset normalised as the checkpoint is (a resumed or residual-only run may read other data than the
    checkpoint was fitted on); its layouts must be the checkpoint's."""
    import dataclasses

    from policy_runtime.dataset import check_matches

    check_matches(data, "the checkpoint", config.action_layout, config.proprio_layout, config.cameras)
    norm = config.normalization
    delta_std = (
        data.proprio_delta_std if norm.proprio_delta_std is None else np.asarray(norm.proprio_delta_std)
    )
    return dataclasses.replace(
        data,
        action_low=np.asarray(norm.action_low),
        action_high=np.asarray(norm.action_high),
        proprio_mean=np.asarray(norm.proprio_mean),
        proprio_std=np.asarray(norm.proprio_std),
        proprio_delta_std=delta_std,
    )


def _mean_over_ranks(logs: dict[str, float], world: int, device) -> dict[str, float]:
    """A step's logged figures over the whole global batch: each rank's, averaged (the shares are equal)."""
    if world == 1:
        return logs
    import torch
    import torch.distributed as dist

    values = torch.tensor(list(logs.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(logs, (values / world).tolist(), strict=True))


def _gathered(noise_state, world: int) -> list:
    """Every rank's noise generator state, in rank order (a collective: every rank calls it)."""
    if world == 1:
        return [noise_state]
    import torch.distributed as dist

    states = [None] * world
    dist.all_gather_object(states, noise_state)
    return states


def _save(out: Path, policy, config, optimizer, state: dict, index_gen, noise_states: list) -> None:
    import torch

    from policy_runtime.model.checkpoint import save_checkpoint

    save_checkpoint(out, policy, config)
    full = dict(state, index_gen=index_gen.get_state(), noise_gens=noise_states)
    if optimizer is not None:
        full["optimizer"] = optimizer.state_dict()
    torch.save(full, out / STATE_FILE)
