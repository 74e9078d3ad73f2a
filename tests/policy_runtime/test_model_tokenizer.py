"""Instruction tokenizers: our byte-level one and a local transformers tokenizer directory."""

from __future__ import annotations

import numpy as np
import pytest

from anchorvla.errors import UserError
from policy_runtime.model.tokenizer import BYTE_VOCAB_SIZE, ByteTokenizer, LocalTokenizer, build_tokenizer


def test_byte_tokenizer_pads_truncates_and_masks_to_a_fixed_length():
    ids, mask = ByteTokenizer().encode(["ab", "a longer instruction"], 6)
    assert ids.shape == mask.shape == (2, 6)
    assert ids[0].tolist() == [1, ord("a") + 3, ord("b") + 3, 2, 0, 0] and mask[0].tolist() == [
        1,
        1,
        1,
        1,
        0,
        0,
    ]
    assert mask[1].all() and ids.max() < BYTE_VOCAB_SIZE


def test_a_tokenizer_trained_in_code_loads_from_its_local_directory(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(
        ["pick up the cup", "open the drawer"], trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"])
    )
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path
    )
    tokenizer = build_tokenizer(str(tmp_path))
    assert isinstance(tokenizer, LocalTokenizer)
    ids, mask = tokenizer.encode(["open the cup", "pick"], 5)
    assert ids.shape == (2, 5) and mask[0].tolist() == [1, 1, 1, 0, 0] and mask[1].tolist() == [1, 0, 0, 0, 0]
    assert len(set(ids[0, :3].tolist())) == 3 and np.all(ids[0, 3:] == ids[1, 1])
    with pytest.raises(UserError, match="not found"):
        build_tokenizer(str(tmp_path / "missing"))
