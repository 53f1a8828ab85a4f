"""Removing whole residual blocks: the block oracle on ResNet, ViT, BERT and Llama, save/load,
and depth against width for a MAC target."""

import pytest
import timm
import torch
from torchvision.models import resnet18
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from graphs.blocks import find_blocks
from surgery import (
    Budget,
    LatencyTarget,
    count_flops,
    load,
    measure_latency,
    prune,
    save,
)
from surgery.errors import SurgeryError
from surgery.plan.blocks import BlockRemoval, block_scores
from surgery.plan.plan import plan_from_json
from surgery.testing.block_oracle import check_blocks, zero_branches
from surgery.testing.oracle import randomize_weights


def small_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval(), {"input_ids": torch.randint(0, 64, (2, 6))}


def test_resnet18_oracle_exact():
    model, x = randomize_weights(resnet18()), torch.randn(2, 3, 32, 32)
    c = check_blocks(model, x, 2, seed=1)
    assert c.removed == c.zeroed == ["layer1.0", "layer4.1"]
    assert c.error == 0.0 and c.skip_error == 0.0 and c.output_scale > 0.01
    assert [type(c.result.model.get_submodule(n)).__name__ for n in c.removed] == ["Skip"] * 2


def test_vit_oracle_exact():
    model = randomize_weights(timm.create_model("vit_tiny_patch16_224", pretrained=False,
                                                img_size=32, patch_size=8, depth=4))
    c = check_blocks(model, torch.randn(2, 3, 32, 32), 2)
    assert len(c.removed) == 2 and c.removed == c.zeroed and c.inexact == ()
    assert c.error <= 1e-6 and c.output_scale > 0.01


def test_bert_post_norm_layers_leave_the_list():
    """BertLayer is LN(h + ffn(h)) after LN(x + attn(x)): zeroed, it computes LN(LN(x)), not
    x, so the zeroed-branch oracle is not exact (said by ``inexact``); removing it is exactly
    skipping it, and the layer leaves its list with the config's count. (With the norms' affine
    at identity, as at init, LN(LN(x)) == LN(x) up to eps: the error is ~1e-7 there.)"""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                     num_attention_heads=4)
    model = randomize_weights(BertModel(cfg))
    c = check_blocks(model, {"input_ids": torch.randint(0, 64, (2, 5))}, 1)
    assert c.removed == c.zeroed == ["encoder.layer.2"] and c.inexact == ("encoder.layer.2",)
    assert c.skip_error <= 1e-6 and c.error > 1e-3
    assert list(c.result.model.encoder.layer._modules) == ["0", "1"]
    assert c.result.model.config.num_hidden_layers == 2 and cfg.num_hidden_layers == 3


def test_llama_gqa_oracle_exact_and_cache_indices():
    model, x = small_llama()
    c = check_blocks(model, x, 2, seed=3)
    assert len(c.removed) == 2 and c.removed == c.zeroed and c.error <= 1e-6
    small = c.result.model
    assert small.config.num_hidden_layers == 2 and model.config.num_hidden_layers == 4
    assert [layer.self_attn.layer_idx for layer in small.model.layers] == [0, 1]
    ids = x["input_ids"]
    with torch.no_grad():  # a cached step gives the full forward's last logits
        past = small(input_ids=ids[:, :-1], use_cache=True).past_key_values
        step = small(input_ids=ids[:, -1:], past_key_values=past).logits[:, -1]
        full = small(input_ids=ids).logits[:, -1]
    assert torch.allclose(step, full, atol=1e-5)


def test_save_load_round_trip_with_channels(tmp_path):
    model, x = randomize_weights(resnet18()), torch.randn(2, 3, 32, 32)
    result = prune(model, x, ratio=0.3, remove_blocks=BlockRemoval(2, "cosine"))
    assert len(result.plan.removed_blocks) == 2 and result.plan.removed()
    assert all(not m.module.startswith(tuple(b + "." for b in result.plan.removed_blocks))
               for g in result.plan.groups for m in g.members)
    save(result, tmp_path)
    small = load(tmp_path, resnet18(), x)
    assert torch.equal(small.eval()(x), result.model(x))


def test_llama_save_load(tmp_path):
    model, x = small_llama()
    result = prune(model, x, remove_blocks=1)
    save(result, tmp_path)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2)
    small = load(tmp_path, LlamaForCausalLM(cfg).eval(), x)
    assert small.config.num_hidden_layers == 3
    assert torch.equal(small(**x).logits, result.model(**x).logits)


def test_depth_budget_takes_zeroed_blocks_and_lands_on_target():
    model, x = randomize_weights(resnet18()), torch.randn(2, 3, 32, 32)
    zero_branches(model, [b for b in find_blocks(model, x) if b.module in ("layer2.1",
                                                                           "layer3.1")])
    dense = count_flops(model, x).total
    target = int(0.5 * dense)
    width = prune(model, x, budget=Budget(target_macs=target))
    depth = prune(model, x, budget=Budget(target_macs=target, depth=True))
    assert width.plan.removed_blocks == []
    assert depth.plan.removed_blocks == ["layer2.1", "layer3.1"]
    assert 0.98 * target <= count_flops(depth.model, x).total <= target


def test_plan_json_and_settings_are_checked():
    model, x = randomize_weights(resnet18()), torch.zeros(1, 3, 32, 32)
    plan = prune(model, x, remove_blocks=1).plan
    assert plan_from_json(plan.to_json()) == plan and plan.removed_blocks == ["layer1.0"]
    for bad in (["layer1..0"], [3], "layer1.0"):
        with pytest.raises(SurgeryError, match="not a valid pruning plan"):
            plan_from_json({**plan.to_json(), "removed_blocks": bad})
    with pytest.raises(SurgeryError, match="removable blocks"):
        prune(model, x, remove_blocks=6)
    with pytest.raises(SurgeryError, match="depth=True"):
        Budget(ratio=0.5, depth=True)


@pytest.mark.zoo
def test_latency_depth_takes_zeroed_blocks(tmp_path):
    """A latency target with depth=True times each block and takes the zeroed ones (their
    importance is 0) before thinning channels; the measured model meets the target."""
    model, x = randomize_weights(resnet18()), torch.randn(1, 3, 64, 64)
    zero_branches(model, [b for b in find_blocks(model, x) if b.module in ("layer2.1",
                                                                           "layer3.1")])
    dense = measure_latency(model, x, threads=1).median_ms
    result = prune(model, x, latency=LatencyTarget(0.6 * dense, depth=True, runs=10,
                                                   cache_dir=tmp_path))
    assert {"layer2.1", "layer3.1"} <= set(result.plan.removed_blocks)
    assert result.latency.measured_ms <= result.latency.target_ms


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["yolov8n", "convnext_atto", "efficientnet_b0",
                                  "swin_tiny_patch4_window7_224", "resnet50"])
def test_block_oracle_families(name):
    """ultralytics C2f bottlenecks (one SiLU module shared by every Conv), timm ConvNeXt
    (layer scale), EfficientNet (inverted residuals), Swin (windows and rolls on the branch,
    reshapes on the trunk) and ResNet-50: the zeroed blocks go and the output stays exact."""
    if name == "yolov8n":
        from ultralytics import YOLO
        model = YOLO("yolov8n.yaml").model.eval()
    else:
        kw = {"img_size": 64, "window_size": 2} if name.startswith("swin") else {}
        model = randomize_weights(timm.create_model(name, pretrained=False, **kw))
    c = check_blocks(model, torch.randn(1, 3, 64, 64), 2)
    assert len(c.removed) == 2 and c.removed == c.zeroed
    assert c.error == 0.0 and c.output_scale > 0.01


def test_cosine_ranks_by_change_on_loader_batches():
    """``cosine`` reads (inputs, labels) pairs as a DataLoader yields them (lists); a zeroed
    block changes nothing (score 0), so it ranks first."""
    model, x = randomize_weights(resnet18()), torch.randn(2, 3, 32, 32)
    blocks = find_blocks(model, x)
    zero_branches(model, [b for b in blocks if b.module == "layer3.1"])
    scores = block_scores(model, blocks, x, BlockRemoval(1, "cosine", [[x, torch.arange(2)]]))
    assert min(scores, key=scores.get) == "layer3.1" and scores["layer3.1"] < 1e-12
    assert all(0 < s < 2 for n, s in scores.items() if n != "layer3.1")
