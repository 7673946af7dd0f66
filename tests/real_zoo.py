"""Real architectures from timm, transformers and torchvision at small configs (random init, no downloads).

Each entry builds the real class with fewer/narrower layers and returns (model, inputs); the tests in
test_real_zoo.py hold modscope's numbers against independent ground truth on each.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from modscope.load.inputs import ModelInputs

IMAGE = (1, 3, 64, 64)


@dataclass(frozen=True)
class ZooModel:
    name: str
    family: str  # timm, hf, torchvision
    build: Callable[[], tuple[torch.nn.Module, ModelInputs]]


def _images(shape=IMAGE) -> ModelInputs:
    return ModelInputs((torch.randn(*shape, generator=torch.Generator().manual_seed(0)),), {})


def _ids(vocab: int, length: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(0))


def _timm(name: str, image=IMAGE, **kwargs):
    def build():
        import timm

        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
        return model, _images(image)

    build.target = (f"timm:{name}", {"num_classes": 10, **kwargs}, image)  # for the CLI: target, --args-json
    return build


TIMM = [
    ZooModel("resnet", "timm", _timm("resnet18", layers=[1, 1, 1, 1])),
    ZooModel("efficientnet", "timm", _timm("test_efficientnet")),
    ZooModel("convnext", "timm", _timm("convnext_atto", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))),
    ZooModel("vit", "timm", _timm("vit_tiny_patch16_224", img_size=64, depth=2, embed_dim=48, num_heads=2)),
    ZooModel("swin", "timm", _timm(
        "swin_tiny_patch4_window7_224", image=(1, 3, 112, 112), img_size=112, window_size=7, depths=(1, 1, 1, 1),
        embed_dim=24, num_heads=(1, 2, 2, 4),
    )),
    ZooModel("deit", "timm", _timm("deit_tiny_patch16_224", img_size=64, depth=2, embed_dim=48, num_heads=2)),
    ZooModel("mobilenetv3", "timm", _timm("mobilenetv3_small_050")),
    ZooModel("regnet", "timm", _timm("regnetx_002")),
    ZooModel("densenet", "timm", _timm("densenet121", growth_rate=8, block_config=(2, 2, 2, 2))),
    ZooModel("mlp_mixer", "timm", _timm("mixer_s32_224", img_size=64)),
    ZooModel("levit", "timm", _timm("levit_128s", img_size=64)),
    ZooModel("nfnet", "timm", _timm("test_nfnet")),
    ZooModel("maxvit", "timm", _timm("test_maxvit", image=(1, 3, 160, 160))),
]


def _hf(config_name: str, model_name: str, inputs: Callable[[Any], ModelInputs], **config):
    def build():
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_name)(**config)
        model = getattr(transformers, model_name)(cfg)
        return model, inputs(cfg)

    build.config = (config_name, model_name, config)  # for the CLI: a save_pretrained folder of the config
    return build


def _text(cfg) -> ModelInputs:
    return ModelInputs((), {"input_ids": _ids(cfg.vocab_size)})


def _seq2seq(cfg) -> ModelInputs:
    return ModelInputs((), {"input_ids": _ids(cfg.vocab_size), "decoder_input_ids": _ids(cfg.vocab_size, 4)})


def _pixels(cfg) -> ModelInputs:
    size = cfg.image_size
    return ModelInputs((), {"pixel_values": torch.randn(1, cfg.num_channels, size, size)})


def _clip(cfg) -> ModelInputs:
    size = cfg.vision_config.image_size
    return ModelInputs((), {
        "input_ids": _ids(cfg.text_config.vocab_size),
        "pixel_values": torch.randn(1, 3, size, size),
    })


def _whisper(cfg) -> ModelInputs:
    return ModelInputs((), {
        "input_features": torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions),
        "decoder_input_ids": _ids(cfg.vocab_size, 4),
    })


def _audio(cfg) -> ModelInputs:
    return ModelInputs((), {"input_values": torch.randn(1, 1600)})


_DECODER = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=64)
_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

HF = [
    ZooModel("gpt2", "hf", _hf("GPT2Config", "GPT2LMHeadModel", _text, vocab_size=128, bos_token_id=0, eos_token_id=0, n_embd=32, n_layer=2, n_head=4,
                               n_positions=64)),
    ZooModel("llama", "hf", _hf("LlamaConfig", "LlamaForCausalLM", _text, **_DECODER)),
    ZooModel("mistral", "hf", _hf("MistralConfig", "MistralForCausalLM", _text, **_DECODER)),
    ZooModel("qwen2", "hf", _hf("Qwen2Config", "Qwen2ForCausalLM", _text, **_DECODER)),
    ZooModel("mixtral", "hf", _hf("MixtralConfig", "MixtralForCausalLM", _text, num_local_experts=4,
                                  num_experts_per_tok=2, **_DECODER)),
    ZooModel("bert", "hf", _hf("BertConfig", "BertForMaskedLM", _text, vocab_size=128, max_position_embeddings=64,
                               **_TOWER)),
    ZooModel("t5", "hf", _hf("T5Config", "T5ForConditionalGeneration", _seq2seq, vocab_size=128, d_model=32, d_kv=8,
                             d_ff=64, num_layers=2, num_heads=4)),
    ZooModel("whisper", "hf", _hf("WhisperConfig", "WhisperForConditionalGeneration", _whisper, vocab_size=128,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                                  d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                                  max_source_positions=16, max_target_positions=16)),
    ZooModel("wav2vec2", "hf", _hf("Wav2Vec2Config", "Wav2Vec2Model", _audio, conv_dim=(16, 16), conv_kernel=(10, 3),
                                   conv_stride=(5, 2), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                                   **_TOWER)),
    ZooModel("vit_hf", "hf", _hf("ViTConfig", "ViTForImageClassification", _pixels, image_size=32, patch_size=8,
                                 **_TOWER)),
    ZooModel("clip", "hf", _hf("CLIPConfig", "CLIPModel", _clip,
                               text_config=dict(vocab_size=128, max_position_embeddings=16, **_TOWER),
                               vision_config=dict(image_size=32, patch_size=8, **_TOWER), projection_dim=16)),
    ZooModel("siglip", "hf", _hf("SiglipConfig", "SiglipModel", _clip,
                                 text_config=dict(vocab_size=128, max_position_embeddings=16, **_TOWER),
                                 vision_config=dict(image_size=32, patch_size=8, **_TOWER))),
    ZooModel("distilbert", "hf", _hf("DistilBertConfig", "DistilBertForMaskedLM", _text, vocab_size=128, dim=32,
                                     n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64)),
    ZooModel("roberta", "hf", _hf("RobertaConfig", "RobertaModel", _text, vocab_size=128, max_position_embeddings=64,
                                  **_TOWER)),
]


def _detection(factory: str, **kwargs):
    def build():
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models.detection, factory)(
            weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64, **kwargs
        )
        return model, ModelInputs(([torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))],), {})

    return build


def _segmentation():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                         num_classes=3)
    return model, _images()


TORCHVISION = [
    ZooModel("fasterrcnn", "torchvision", _detection("fasterrcnn_mobilenet_v3_large_fpn")),
    ZooModel("maskrcnn", "torchvision", _detection("maskrcnn_resnet50_fpn", trainable_backbone_layers=0)),
    ZooModel("deeplabv3", "torchvision", _segmentation),
]

ZOO = TIMM + HF + TORCHVISION
