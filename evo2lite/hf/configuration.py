"""Evo2LiteConfig: our ModelConfig fields inside a transformers PreTrainedConfig (model_type "evo2lite").

The architecture fields are ModelConfig's, under the same names; `to_model_config()` gives the frozen,
validated ModelConfig the model is built from, so there is one source of truth for the shape. The HF side
adds the token ids (EOS 0, PAD 1, no BOS: evo2lite/tokenizer.py), tied embeddings and the pooling of the
sequence-classification head (`classifier_pool` as `evo2lite embed --pool`, `classifier_layer` a layer name
of evo2lite.apps.embed; None = embed's default layer).
"""

from __future__ import annotations

import dataclasses

from transformers import PretrainedConfig

from ..config import PRESETS, ModelConfig
from ..tokenizer import EOS_ID, PAD_ID

MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# A config built with no arguments (transformers does that, e.g. to diff against defaults) is the debug shape.
_DEFAULTS = PRESETS["debug"].to_dict()


class Evo2LiteConfig(PretrainedConfig):
    model_type = "evo2lite"

    def __init__(self, layout: str = _DEFAULTS["layout"], d_model: int = _DEFAULTS["d_model"],
                 num_heads: int = _DEFAULTS["num_heads"], d_mlp: int = _DEFAULTS["d_mlp"],
                 num_se_groups: int = _DEFAULTS["num_se_groups"], num_mr_groups: int = _DEFAULTS["num_mr_groups"],
                 vocab_size: int = 512, featurizer_len: int = 3, se_filter_len: int = 7, mr_filter_len: int = 128,
                 state_size: int = 16, rotary_base: float = 10000.0, rotary_scale: float = 1.0, eps: float = 1e-6,
                 context_len: int = _DEFAULTS["context_len"], fp8_input_projections: bool = False, name: str = "",
                 classifier_pool: str = "mean", classifier_layer: str | None = None, use_cache: bool = True,
                 pad_token_id: int = PAD_ID, eos_token_id: int = EOS_ID, bos_token_id: int | None = None,
                 tie_word_embeddings: bool = True, **kwargs) -> None:
        self.layout, self.d_model, self.num_heads, self.d_mlp = layout, d_model, num_heads, d_mlp
        self.num_se_groups, self.num_mr_groups, self.vocab_size = num_se_groups, num_mr_groups, vocab_size
        self.featurizer_len, self.se_filter_len, self.mr_filter_len = featurizer_len, se_filter_len, mr_filter_len
        self.state_size, self.rotary_base, self.rotary_scale, self.eps = state_size, rotary_base, rotary_scale, eps
        self.context_len, self.fp8_input_projections, self.name = context_len, fp8_input_projections, name
        self.classifier_pool, self.classifier_layer, self.use_cache = classifier_pool, classifier_layer, use_cache
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.to_model_config()  # validate now: a bad field fails here, naming the field

    # transformers' generic names for the sizes (pipelines and PEFT read them)
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return len(self.layout)

    @property
    def num_attention_heads(self) -> int:
        return self.num_heads

    def to_model_config(self) -> ModelConfig:
        return ModelConfig.from_dict({name: getattr(self, name) for name in MODEL_FIELDS})

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> "Evo2LiteConfig":
        return cls(**config.to_dict(), **kwargs)
