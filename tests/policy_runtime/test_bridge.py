"""The two bridges on the same weights: 'concat' (every head block cross-attends to all listed layers as one token
sequence) and VLA-Adapter's layer-wise 'layers' (head block i cross-attends to layer bridge_layers[i] alone)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from anchorvla.errors import UserError
from policy_runtime.model.config import ArchitectureConfig
from policy_runtime.model.policy import AnchorVLAPolicy
from policy_runtime.model.presets import tiny_architecture
from policy_runtime.model.tokenizer import ByteTokenizer


def _arch(bridge: str, layers=(1, 2), depth: int = 2) -> ArchitectureConfig:
    arch = tiny_architecture(action_dim=3, proprio_dim=4, horizon=4, num_anchors=4)
    data = arch.model_dump()
    data["backbone"].update(bridge=bridge, bridge_layers=list(layers))
    data["head"]["depth"] = depth
    return ArchitectureConfig.model_validate(data)


def _policies() -> tuple[AnchorVLAPolicy, AnchorVLAPolicy]:
    """(layer-wise, concat) policies holding the same weights, the head's AdaLN gates opened (zero at init, they
    would hide the bridge from the chunk)."""
    torch.manual_seed(0)
    layerwise = AnchorVLAPolicy(_arch("layers")).eval()
    layerwise.head.anchors.copy_(torch.rand(4, 4, 3) * 2 - 1)
    for block in layerwise.head.blocks:
        torch.nn.init.normal_(block.modulation[1].weight, std=0.2)
    concat = AnchorVLAPolicy(_arch("concat")).eval()
    concat.load_state_dict(layerwise.state_dict())
    return layerwise, concat


def _inputs():
    g = torch.Generator().manual_seed(1)
    ids, mask = ByteTokenizer().encode(["pick the cup"], 24)
    images = torch.randn(1, 2, 3, 32, 32, generator=g)
    return images, torch.from_numpy(ids), torch.from_numpy(mask), torch.randn(1, 4, generator=g)


def test_layerwise_bridge_gives_each_head_block_its_own_layer_and_differs_from_concat():
    layerwise, concat = _policies()
    images, ids, mask, proprio = _inputs()
    noise = torch.randn(layerwise.head.noise_shape(1), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        per_layer = layerwise.condition(proprio, images, ids, mask)
        joined = concat.condition(proprio, images, ids, mask)
        # The same features (2 images x 16 patches + 4 queries per layer), shaped for their bridge.
        assert per_layer.shape == (1, 2, 36, 64) and joined.shape == (1, 72, 64)
        assert torch.equal(per_layer.flatten(1, 2), joined)
        swapped = per_layer.flip(1)  # layer 2 to block 0, layer 1 to block 1
        chunk_l = layerwise.head.sample(per_layer, proprio, noise)[0]
        chunk_c = concat.head.sample(joined, proprio, noise)[0]
        # Concat cross-attends to one unordered set of tokens: the layers' order does not matter to it ...
        torch.testing.assert_close(concat.head.sample(swapped.flatten(1, 2), proprio, noise)[0], chunk_c)
        # ... the layer-wise head reads block by block: swapping which layer feeds which block changes the chunk.
        assert not torch.allclose(layerwise.head.sample(swapped, proprio, noise)[0], chunk_l, atol=1e-4)
        assert not torch.allclose(chunk_l, chunk_c, atol=1e-4)


def test_layerwise_bridge_needs_one_layer_per_head_block_of_a_vlm_dit_head():
    with pytest.raises(ValidationError, match="bridge_layers has 2 entries, head.depth is 3"):
        _arch("layers", depth=3)
    _arch("concat", depth=3)  # concat takes any number of layers
    data = _arch("concat").model_dump()
    data["head"]["mode"] = "linear"
    data["backbone"]["bridge"] = "layers"
    with pytest.raises(ValidationError, match="needs a DiT head"):
        ArchitectureConfig.model_validate(data)
    with pytest.raises(UserError, match=r"bridge_layers \[5\]: the LM has 2 layers"):
        AnchorVLAPolicy(_arch("layers", layers=(1, 5)))
