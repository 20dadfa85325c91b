"""transformers classes wrapping StripedHyena2 (the module itself, under the prefix `model.`, not a copy).

- `Evo2LiteForCausalLM`: logits, `labels` -> our trainer's loss (weighted next-token cross entropy),
  `output_hidden_states` -> the layers of `evo2lite embed`, and `generate()` with our recurrent state as
  its cache (`Evo2LiteCache`, a transformers `Cache`): after the prompt, one token per step goes through
  the model (FIR tails, modal state and KV cache carry the rest).
- `Evo2LiteForSequenceClassification`: a linear head on a layer pooled as `evo2lite embed --pool` does.

Legend: B batch, L length, D d_model, V vocabulary, N labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast, SequenceClassifierOutputWithPast

from ..errors import Evo2LiteError
from ..inference.engine import forward_chunk
from ..inference.state import InferenceState
from ..model import StripedHyena2, init_weights_
from .configuration import Evo2LiteConfig

# transformers renamed the cache field of model outputs and generate's kwargs from `past_key_values` (<= 5.1x)
# to `cache` (5.2x); outputs carry whichever the installed version reads back in generate.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
IGNORE_INDEX = -100


class Evo2LiteCache(Cache):
    """Our InferenceState (per block: FIR tails, LR modal state, KV cache) behind transformers' Cache API.

    It cannot be cropped (a recurrent state does not rewind), so assisted decoding is refused; beam search
    works through `reorder_cache` (rows of the state are selected)."""

    is_compileable = False

    def __init__(self, num_blocks: int, batch_size: int) -> None:
        super().__init__(layers=[])  # our state is not a list of transformers cache layers
        self.state = InferenceState.empty(num_blocks, batch_size)

    def __len__(self) -> int:
        return len(self.state.layers)

    def __repr__(self) -> str:
        return f"Evo2LiteCache(batch_size={self.state.batch_size}, position={self.state.position})"

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.state.position

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    @property
    def is_initialized(self) -> bool:
        return self.state.position > 0

    @property
    def is_croppable(self) -> bool:
        return False

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("an evo2lite recurrent state cannot be cropped (no assisted decoding)")

    def reset(self) -> None:
        self.state = InferenceState.empty(len(self.state.layers), self.state.batch_size)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.state = self.state.select(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.state = self.state.select(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.state = self.state.select(torch.arange(self.state.batch_size).repeat_interleave(repeats))


def _check_mask(attention_mask: torch.Tensor | None, where: str) -> None:
    """The model is causal and has no padding mask: right padding is harmless (real positions never see
    it); left padding or holes would change the real positions' outputs, so they are refused."""
    if attention_mask is None:
        return
    mask = attention_mask.bool()
    if not torch.equal(mask, mask.cummin(dim=-1).values):
        raise Evo2LiteError(f"{where}: evo2lite models take right-padded batches only (attention_mask 1...1 0...0 "
                            "per row); pad on the right (tokenizer.padding_side = 'right')")


class Evo2LitePreTrainedModel(PreTrainedModel):
    config_class = Evo2LiteConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    # spec §2.10: LR poles/residues and rotary frequencies stay fp32 whatever dtype the model loads in
    _keep_in_fp32_modules_strict = ["log_poles", "residues", "inv_freq"]
    _is_stateful = True  # recurrent state: no cache cropping (assisted decoding, contrastive search)
    supports_gradient_checkpointing = False

    def __init__(self, config: Evo2LiteConfig) -> None:
        super().__init__(config)
        self.model = StripedHyena2(config.to_model_config())
        if self.model.device.type != "meta":  # from_pretrained builds on meta and loads the weights after
            init_weights_(self.model, seed=int(torch.randint(0, 2**62, (), dtype=torch.int64)))

    def _init_weights(self, module: nn.Module) -> None:
        # The backbone is initialised by spec §9 in __init__ (a fresh model) or loaded; only heads the
        # checkpoint lacks (a classifier's `score`) are drawn here.
        if module is getattr(self, "score", None):
            from transformers import initialization as init

            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained (safetensors), plus `auto_map` and the remote-code shims."""
        from .export import AUTO_MAP, write_remote_code

        self.config.auto_map = dict(AUTO_MAP)
        out = super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)
        return out

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embedding

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embedding = value

    def _backbone(self, input_ids: torch.Tensor, cache: Evo2LiteCache | None, capture: dict | None,
                  num_blocks: int | None = None) -> torch.Tensor:
        """The final-norm output (or the residual stream after `num_blocks`), continuing `cache` if given:
        through the inference engine (in-place KV buffers, inference mode) unless gradients are on."""
        if cache is not None and input_ids.shape[0] != cache.batch_size:
            raise ValueError(f"input_ids have batch size {input_ids.shape[0]}, the cache {cache.batch_size}")
        if cache is None or torch.is_grad_enabled():
            state = None if cache is None else cache.state
            return self.model.hidden_states(input_ids, state, capture=capture, num_blocks=num_blocks)
        out = {} if capture is None else capture
        out.setdefault("final", None)
        forward_chunk(self.model, input_ids, cache.state, logits="none", capture=out)
        return out["final"]


def _hidden_layers(num_blocks: int) -> list[str]:
    """transformers' layout of hidden_states after the embedding: each block's output, the last replaced by
    the final-norm output (as in Llama). In evo2lite embed's names: blocks.0 .. blocks.N-2, final."""
    return [f"blocks.{i}" for i in range(num_blocks - 1)] + ["final"]


class Evo2LiteForCausalLM(Evo2LitePreTrainedModel, GenerationMixin):
    def __init__(self, config: Evo2LiteConfig) -> None:
        super().__init__(config)
        self.post_init()

    def get_output_embeddings(self) -> None:
        return None  # the unembedding is the embedding matrix itself (F.linear), not a module

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # generate must not make a DynamicCache: forward makes an Evo2LiteCache

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, loss_weights: torch.Tensor | None = None,
                use_cache: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, inputs_embeds: torch.Tensor | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, **kwargs):
        """labels (B, L): next-token targets as in transformers (shifted here; IGNORE_INDEX -100 skipped).
        loss_weights (B, L): per-token weights of our trainer (pipelines.datasets: soft-masked bases).
        The loss is sum(w * nll) / sum(w) over positions 1.., as `evo2lite train` computes it; with
        num_items_in_batch (HF Trainer, gradient accumulation) the sum is divided by that instead.
        use_cache: continue / return an Evo2LiteCache (inference only; default off outside generate)."""
        if inputs_embeds is not None or input_ids is None:
            raise ValueError("evo2lite models take input_ids (byte ids), not inputs_embeds")
        cache = kwargs.pop("cache", None)
        cache = kwargs.pop("past_key_values", None) if cache is None else cache
        if cache is not None and not isinstance(cache, Evo2LiteCache):
            raise ValueError(f"evo2lite models carry an Evo2LiteCache, got {type(cache).__name__}")
        use_cache = cache is not None if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = Evo2LiteCache(self.model.config.num_blocks, input_ids.shape[0])
        if cache is None or cache.get_seq_length() == 0:  # one check per prompt, not per decoded token
            _check_mask(attention_mask, "attention_mask")
        output_hidden_states = output_hidden_states if output_hidden_states is not None \
            else self.config.output_hidden_states
        capture = dict.fromkeys(_hidden_layers(self.model.config.num_blocks)) if output_hidden_states else None
        x_BLD = self._backbone(input_ids, cache if use_cache else None, capture)
        logits_BLV = F.linear(x_BLD, self.model.embedding.weight)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits_BLV, labels, loss_weights, num_items_in_batch)
        hidden = None
        if capture is not None:
            hidden = (self.model.embedding(input_ids.to(self.model.device)),) + tuple(capture.values())
        return CausalLMOutputWithPast(loss=loss, logits=logits_BLV, hidden_states=hidden,
                                      **{CACHE_FIELD: cache if use_cache else None})

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, use_cache=True,
                                      inputs_embeds=None, **kwargs) -> dict:
        """Only the tokens the state has not consumed: the whole prompt first, then one token per step."""
        if inputs_embeds is not None:
            raise ValueError("evo2lite models generate from input_ids, not inputs_embeds")
        cache = kwargs.get("cache")
        cache = kwargs.get("past_key_values") if cache is None else cache
        if cache is not None:
            input_ids = input_ids[:, cache.get_seq_length():]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": use_cache,
                  CACHE_FIELD: cache}
        for key in ("output_hidden_states", "return_dict"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs


def causal_lm_loss(logits_BLV: torch.Tensor, labels_BL: torch.Tensor, weights_BL: torch.Tensor | None = None,
                   num_items_in_batch=None) -> torch.Tensor:
    """Weighted next-token cross entropy of `evo2lite train` (apps/train.py), in fp32: position t predicts
    labels[t + 1]; -100 labels weigh 0."""
    targets_BL = labels_BL[:, 1:].to(logits_BLV.device)
    w_BL = (targets_BL != IGNORE_INDEX).float()
    if weights_BL is not None:
        w_BL = w_BL * weights_BL[:, 1:].to(w_BL.device, torch.float32)
    V = logits_BLV.shape[-1]
    nll = F.cross_entropy(logits_BLV[:, :-1].float().reshape(-1, V), targets_BL.clamp(min=0).reshape(-1),
                          reduction="none")
    total = (nll * w_BL.reshape(-1)).sum()
    if num_items_in_batch is not None and weights_BL is None:
        return total / torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
    return total / w_BL.sum()


class Evo2LiteForSequenceClassification(Evo2LitePreTrainedModel):
    """Pooled features of one layer (as `evo2lite embed --layer L --pool P`) -> a linear head.

    config.classifier_pool: mean | max | last; config.classifier_layer: an embed layer name (blocks.N,
    blocks.N.mlp, final); None = embed's default layer. Only the blocks up to that layer run. Batches are
    right-padded (attention_mask): padding never enters the pool. num_labels 1 = regression (MSE)."""

    def __init__(self, config: Evo2LiteConfig) -> None:
        from ..apps.embed import POOLS, resolve_layers

        super().__init__(config)
        if config.classifier_pool not in POOLS:
            raise Evo2LiteError(f"classifier_pool must be one of {', '.join(POOLS)}, got {config.classifier_pool!r}")
        self.layer = resolve_layers(self.model.config, config.classifier_layer)[0]
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def _num_blocks(self) -> int | None:
        if self.layer == "final":
            return None
        return int(self.layer.split(".")[1]) + 1

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) pooled features, fp32: equal to `evo2lite.embed(..., layers=layer, pool=pool)` per record."""
        _check_mask(attention_mask, "attention_mask")
        capture = {self.layer: None}
        self._backbone(input_ids, None, capture, num_blocks=self._num_blocks())
        x_BLD = capture[self.layer].float()
        B, L, _ = x_BLD.shape
        mask_BL = torch.ones(B, L, dtype=torch.bool, device=x_BLD.device) if attention_mask is None \
            else attention_mask.to(x_BLD.device).bool()
        lengths_B = mask_BL.sum(-1)
        if self.config.classifier_pool == "mean":
            return (x_BLD * mask_BL[..., None]).sum(1) / lengths_B[:, None]
        if self.config.classifier_pool == "max":
            return x_BLD.masked_fill(~mask_BL[..., None], float("-inf")).amax(1)
        return x_BLD[torch.arange(B, device=x_BLD.device), lengths_B - 1]

    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                num_items_in_batch: int | torch.Tensor | None = None, **kwargs):
        """labels (B,): class ids (-100 skipped), or targets when num_labels == 1 (MSE). The loss is the
        mean over the batch, or the sum / num_items_in_batch (HF Trainer with gradient accumulation)."""
        if input_ids is None:
            raise ValueError("evo2lite models take input_ids (byte ids)")
        features_BD = self.pooled(input_ids, attention_mask)
        logits_BN = self.score(features_BD.to(self.score.weight.dtype))
        loss = None
        if labels is not None:
            labels = labels.to(logits_BN.device)
            if self.num_labels == 1:
                losses_B = F.mse_loss(logits_BN[:, 0].float(), labels.float(), reduction="none")
                count = labels.numel()
            else:
                losses_B = F.cross_entropy(logits_BN.float(), labels.long(), reduction="none",
                                           ignore_index=IGNORE_INDEX)
                count = (labels != IGNORE_INDEX).sum()
            total = num_items_in_batch if num_items_in_batch is not None else count
            loss = losses_B.sum() / torch.as_tensor(total, device=losses_B.device, dtype=losses_B.dtype)
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits_BN)


__all__ = ["Evo2LiteCache", "Evo2LiteForCausalLM", "Evo2LiteForSequenceClassification", "Evo2LitePreTrainedModel",
           "causal_lm_loss"]
