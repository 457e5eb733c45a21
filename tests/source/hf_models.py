"""Hugging Face transformers built from a config (random weights, nothing downloaded), for the
shared-dimension and integer-range paths. transformers is a test dependency only."""

from __future__ import annotations

import os

from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 1000


def tiny_bert() -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)
    return BertModel(config).eval()


def bert_base() -> nn.Module:
    """BERT-base's shape (12 layers, hidden 768, vocabulary 30522), random weights: what the GPU
    check times (benchmarks/gpu_check.sh)."""
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig()).eval()


def tiny_llama() -> nn.Module:
    """A causal LM: under causal attention a left-leading 0 in the mask leaves a query with no
    valid key, where eager and ONNX Runtime legitimately differ; a tokenizer never makes one."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, use_cache=False)
    return LlamaForCausalLM(config).eval()


def tiny_clip() -> nn.Module:
    """CLIP: forward(input_ids, pixel_values, attention_mask, ...), an order the README's
    (ids, mask, then the image) doesn't follow: bound by position, it failed."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": 64, "projection_dim": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8,
                       "projection_dim": 16},
        projection_dim=16)
    return CLIPModel(config).eval()
