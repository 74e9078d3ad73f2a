"""backbone.token_order 'instruction_first': the instruction's keys and values, computed once per episode, give
the same bridge features as the whole sequence, chunk after chunk (the cache is not consumed); the default order
has no such cache."""

from __future__ import annotations

import pytest
import torch

from policy_runtime.model.backbone import VLABackbone
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.model.tokenizer import ByteTokenizer


def _backbone(order: str) -> VLABackbone:
    torch.manual_seed(0)
    config = tiny_architecture(action_dim=9, proprio_dim=15).backbone.model_copy(update={"token_order": order})
    return VLABackbone(config).eval()


def _inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(1, 2, 3, 32, 32, generator=generator)
    ids, mask = ByteTokenizer().encode(["pick up the red cup"], 24)
    return images, torch.from_numpy(ids), torch.from_numpy(mask)


@torch.inference_mode()
def test_cached_instruction_gives_the_whole_sequence_bridge_for_every_chunk():
    backbone = _backbone("instruction_first")
    _images, ids, mask = _inputs(0)
    cache = backbone.instruction_cache(ids, mask)
    for seed in (1, 2):  # two chunks of one episode: new images, the same instruction
        images = _inputs(seed)[0]
        whole = backbone(images, ids, mask)
        cached = backbone(images, ids, mask, instruction_cache=cache)
        torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)
    other = backbone(_inputs(3)[0], ids, mask, instruction_cache=cache)
    assert not torch.allclose(other, whole, atol=1e-3)  # the images still count


@torch.inference_mode()
def test_the_order_changes_the_features_and_vision_first_has_no_cache():
    images, ids, mask = _inputs(0)
    first, second = _backbone("vision_first"), _backbone("instruction_first")
    assert first(images, ids, mask).shape == second(images, ids, mask).shape
    assert not torch.allclose(first(images, ids, mask), second(images, ids, mask), atol=1e-3)
    with pytest.raises(ValueError, match="instruction_first"):
        first.instruction_cache(ids, mask)
