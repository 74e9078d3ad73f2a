"""What caching the instruction's keys and values saves per chunk (`bench engines --instruction-cache`).

The instruction is constant in an episode. With backbone.token_order 'instruction_first' its keys and values in
every LM layer depend on nothing after it, so `VLABackbone.instruction_cache` computes them once per episode
and each chunk runs the LM over the vision and query tokens only. This times the torch backbone of a checkpoint's
architecture in that order (random weights: the cost does not depend on them) without and with the cache, and
the cache's own cost, paid once per episode.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def time_instruction_cache(checkpoint: Path, sample, threads: int, repeats: int) -> dict:
    import torch

    from policy_runtime.model.backbone import VLABackbone
    from policy_runtime.model.checkpoint import CONFIG_FILE
    from policy_runtime.model.config import CheckpointConfig

    torch.set_num_threads(threads)
    config = CheckpointConfig.read(Path(checkpoint) / CONFIG_FILE).architecture.backbone
    if config is None or config.kind != "vlm":
        return {"error": "the instruction cache is for the VLM backbone (this checkpoint has none)"}
    torch.manual_seed(0)  # the towers' sizes are in the config; random weights time the same
    update = {"token_order": "instruction_first", "vision_path": None, "llm_path": None}
    backbone = VLABackbone(config.model_copy(update=update)).eval()
    t = torch.from_numpy
    images, ids, mask = t(sample.images), t(sample.input_ids), t(sample.attention_mask)
    times: dict[str, list[float]] = {"whole": [], "cached": [], "cache_build": []}
    with torch.inference_mode():
        cache = backbone.instruction_cache(ids, mask)
        backbone(images, ids, mask), backbone(images, ids, mask, instruction_cache=cache)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            backbone(images, ids, mask)
            t1 = time.perf_counter()
            backbone(images, ids, mask, instruction_cache=cache)
            t2 = time.perf_counter()
            cache = backbone.instruction_cache(ids, mask)
            t3 = time.perf_counter()
            for key, ms in zip(times, ((t1 - t0), (t2 - t1), (t3 - t2)), strict=True):
                times[key].append(ms * 1e3)
    out = {f"{key}_ms": float(np.median(v)) for key, v in times.items()}
    out["instruction_tokens"] = int(ids.shape[1])
    out["saved_ms"] = out["whole_ms"] - out["cached_ms"]
    return out


def print_instruction_cache(size: str, row: dict) -> None:
    if "error" in row:
        print(f"\n{size}: instruction cache not measured: {row['error']}")
        return
    print(
        f"\n{size}: torch backbone, token_order instruction_first ({row['instruction_tokens']} instruction tokens): "
        f"whole sequence {row['whole_ms']:.1f} ms, with the instruction's KV cached {row['cached_ms']:.1f} ms "
        f"(saves {row['saved_ms']:.1f} ms, {100 * row['saved_ms'] / row['whole_ms']:.1f}% per chunk); "
        f"the cache itself {row['cache_build_ms']:.1f} ms once per episode"
    )
