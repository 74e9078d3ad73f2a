"""Tiny Hugging Face-format towers laid out as `huggingface-cli download` leaves the real ones, made here with
transformers' `save_pretrained` and the `tokenizers` library (nothing is downloaded): a whole SigLIP model (text and
vision towers, as google/siglip-base-patch16-224) and a Qwen2 causal LM with its tokenizer.json and
tokenizer_config.json (as Qwen/Qwen2.5-0.5B: rows to spare in the embedding, `<|endoftext|>` pads and ends text)."""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_SIZE = 32
LM_HIDDEN = 64
LM_LAYERS = 2
SENTENCES = ["pick up the red cup", "open the drawer", "touch the blue marker", "reach the green goal"]
END = "<|endoftext|>"


def write_tokenizer(directory: Path, sentences: list[str] = SENTENCES, eos: str = END) -> int:
    """A word-level tokenizer.json trained on `sentences`, and a tokenizer_config.json naming its pad and eos
    tokens; returns its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=[END, "[UNK]", "<|im_end|>"]))
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {"pad_token": END, "eos_token": eos, "tokenizer_class": "Qwen2Tokenizer"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size(with_added_tokens=True)


def write_towers(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(SigLIP directory, Qwen2 LM directory with its tokenizer) under `root`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipConfig, SiglipModel

    torch.manual_seed(seed)
    vision_dir, llm_dir = root / "siglip", root / "qwen2"
    vocab = write_tokenizer(llm_dir)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    siglip = SiglipConfig(
        vision_config=dict(small, image_size=IMAGE_SIZE, patch_size=8),
        text_config=dict(small, vocab_size=vocab, pad_token_id=0, bos_token_id=0, eos_token_id=0),
    )
    SiglipModel(siglip).save_pretrained(vision_dir)
    lm = Qwen2Config(
        vocab_size=vocab + 8, hidden_size=LM_HIDDEN, intermediate_size=128, num_hidden_layers=LM_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=0, bos_token_id=0,
    )  # fmt: skip
    Qwen2ForCausalLM(lm).save_pretrained(llm_dir)
    return vision_dir, llm_dir


def architecture(vision_dir: Path, llm_dir: Path, bridge: str, bridge_layers: list[int], **backbone) -> dict:
    """An architecture JSON (as `anchorvla train --architecture` reads it) on the two directories; the dataset
    sets the head's horizon and sizes."""
    return {
        "backbone": {
            "vision_path": str(vision_dir), "llm_path": str(llm_dir), "bridge": bridge,
            "bridge_layers": bridge_layers, "lora_rank": 4, "lora_alpha": 8, "num_queries": 4, "num_images": 2,
            "max_instruction_tokens": 8, **backbone,
        },
        "head": {
            "horizon": 1, "action_dim": 1, "proprio_dim": 1, "cond_dim": LM_HIDDEN, "dim": 32, "depth": 2,
            "heads": 2, "inference_steps": 3,
        },
        "residual": {"hidden": 16},
        "image_size": IMAGE_SIZE,
    }  # fmt: skip
