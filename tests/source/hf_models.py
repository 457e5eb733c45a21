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


def tiny_rtdetr() -> nn.Module:
    """transformers' RT-DETR from a tiny config: `logits` [B,20,3] and `pred_boxes` [B,20,4]
    of normalised cx, cy, w, h."""
    from transformers import RTDetrConfig, RTDetrForObjectDetection

    backbone = {"model_type": "rt_detr_resnet", "embedding_size": 16,
                "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1],
                "layer_type": "basic", "out_features": ["stage2", "stage3", "stage4"]}
    config = RTDetrConfig(
        backbone_config=backbone, use_pretrained_backbone=False, encoder_hidden_dim=32,
        encoder_in_channels=[32, 64, 128], encoder_ffn_dim=64, encoder_layers=1,
        encoder_attention_heads=2, d_model=32, decoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_in_channels=[32, 32, 32], decoder_n_points=2,
        num_queries=20, num_labels=3)
    return RTDetrForObjectDetection(config).eval()
