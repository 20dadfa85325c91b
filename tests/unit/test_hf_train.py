"""Fine-tuning through the transformers ecosystem: the HF Trainer (causal LM and sequence classification
from a labelled CSV) lowers the loss; a PEFT LoRA adapter on the named projections trains, and merged
equals unmerged."""

from __future__ import annotations

import csv

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the HF Trainer needs it

from transformers import (DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer,  # noqa: E402
                          TrainingArguments)

from evo2lite.config import ModelConfig  # noqa: E402
from evo2lite.hf import (Evo2LiteConfig, Evo2LiteForCausalLM, Evo2LiteForSequenceClassification,  # noqa: E402
                         Evo2LiteTokenizer)

# smaller than the debug preset (every block kind, short filters): a few optimizer steps take well under 1 s
TINY = ModelConfig(layout="SMLA", d_model=32, num_heads=2, d_mlp=64, num_se_groups=2, num_mr_groups=2,
                   mr_filter_len=16, context_len=64, name="tiny")


def _args(tmp_path, steps: int, lr: float) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, learning_rate=lr,
                             per_device_train_batch_size=4, gradient_accumulation_steps=2, warmup_steps=0,
                             lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to=[],
                             use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0)


def _mean_loss(model, batches) -> float:
    model.eval()
    with torch.no_grad():
        return float(sum(model(**b).loss for b in batches) / len(batches))


def test_trainer_lowers_the_causal_lm_loss(tmp_path):
    torch.manual_seed(0)
    tok = Evo2LiteTokenizer()
    model = Evo2LiteForCausalLM(Evo2LiteConfig.from_model_config(TINY))
    seqs = ["ACGTTGCA" * 4, "GGGCCCAT" * 3, "ATATATATCGCG" * 2, "TTTTGGGGAAAACCCC" * 2] * 4
    data = [tok(s) for s in seqs]
    collate = DataCollatorForLanguageModeling(tok, mlm=False)
    batches = [collate(data[i:i + 4]) for i in range(0, len(data), 4)]
    assert (batches[0]["labels"][1, -8:] == -100).all()  # right padding is not scored
    before = _mean_loss(model, batches)
    trainer = Trainer(model=model, args=_args(tmp_path, 12, 1e-2), train_dataset=data, data_collator=collate)
    trainer.train()
    after = _mean_loss(model, batches)
    assert after < 0.7 * before, (before, after)
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses[-1] < losses[0]


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sequence", "label"])
        writer.writerows(rows)


def _read_csv(path, tok):
    with open(path, newline="") as fh:
        return [{**tok(r["sequence"]), "labels": int(r["label"])} for r in csv.DictReader(fh)]


def test_trainer_fine_tunes_a_classifier_from_a_csv(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    rows = []
    for i in range(32):  # label 1: GC-rich, label 0: AT-rich
        alphabet = "GCGCGCAT" if i % 2 else "ATATATGC"
        picks = torch.randint(0, 8, (24,), generator=gen).tolist()
        rows.append(("".join(alphabet[p] for p in picks), i % 2))
    _write_csv(tmp_path / "train.csv", rows)
    tok = Evo2LiteTokenizer()
    data = _read_csv(tmp_path / "train.csv", tok)
    cfg = Evo2LiteConfig.from_model_config(TINY, num_labels=2, classifier_pool="mean")
    model = Evo2LiteForSequenceClassification(cfg)
    collate = DataCollatorWithPadding(tok)
    batches = [collate(data[i:i + 8]) for i in range(0, len(data), 8)]
    before = _mean_loss(model, batches)
    trainer = Trainer(model=model, args=_args(tmp_path, 16, 1e-2), train_dataset=data, data_collator=collate)
    trainer.train()
    after = _mean_loss(model, batches)
    assert after < 0.7 * before, (before, after)


def test_peft_lora_trains_and_merges(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = Evo2LiteForCausalLM(Evo2LiteConfig.from_model_config(TINY))
    ids = Evo2LiteTokenizer()(["ACGTTGCAACGTTGCAGGATCC"] * 4, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = base(ids).logits.clone()
    targets = ["in_proj", "qkv_proj", "out_proj"]
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                      task_type="CAUSAL_LM"))
    lora_modules = [n for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    assert len(lora_modules) == 2 * len(TINY.layout)  # in/qkv and out projection of every block
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    model.train()
    for _ in range(8):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits.clone()
        merged_model = model.merge_and_unload()
        merged = merged_model(ids).logits
    assert type(merged_model) is Evo2LiteForCausalLM
    assert not torch.allclose(unmerged, reference, atol=1e-3)  # the adapter changed the model
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
