"""Models as people bring them, one of each kind: traced from their real forward, pruned, exact.

timm (a CNN built of BatchNormAct2d, a ViT), Hugging Face (BERT, Llama with grouped-query
attention), ultralytics YOLOv8n from its yaml, torchvision detection and segmentation. All built
with random weights (nothing is downloaded). The oracle (surgery.testing.oracle.check) kills
channels of every group that prunes exactly, prunes them and compares outputs; groups whose
pruning cannot be exact (a norm over the channels) are pruned separately and checked to run.
The full survey is benchmarks/coverage.py.
"""

from __future__ import annotations

import pytest
import torch

from graphs import SIZE, trace
from surgery import lint, prune
from surgery.testing.oracle import check, randomize_weights, tensors_of

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")


def assert_exact(model, x, *, at=None, min_groups=1):
    c = check(model, x, 0.5, at=at)
    assert c.removed == c.dead and len(c.dead) >= min_groups
    assert c.shape_kept and c.output_scale > 1e-6 and c.error <= 1e-4, c.error
    assert c.result.params_after < c.result.params_before
    return c


def test_timm_cnn_of_batchnormact2d_prunes_every_inner_group_exactly():
    torch.manual_seed(0)
    model = randomize_weights(timm.create_model("mobilenetv3_small_050", num_classes=10))
    assert any(type(m).__name__ == "BatchNormAct2d" for m in model.modules())
    c = assert_exact(model, torch.randn(2, 3, 32, 32), min_groups=10)
    assert all(g.reason in ("touches the model input", "touches the model output")
               for g in c.graph.groups if not g.prunable)


def small_timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return randomize_weights(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
                                               num_heads=4, num_classes=10, init_values=0.5))


def test_timm_vit_loses_whole_heads_and_updates_num_heads():
    model, x = small_timm_vit(), torch.randn(2, 3, 32, 32)
    c = assert_exact(model, x, min_groups=4)
    attn = c.result.model.blocks[0].attn
    assert attn.num_heads == 2 and attn.attn_dim == 16 and attn.qkv.out_features == 48
    heads = next(g for g in c.graph.prunable if g.channels == 4)
    assert {(m.attr, m.role) for m in heads.members if m.role == SIZE} == {
        ("num_heads", SIZE), ("attn_dim", SIZE)}


def test_timm_vit_stream_prunes_with_class_token_position_embedding_and_layer_scale():
    """Not exact (LayerNorm over the stream): it runs, keeps the output shape, cuts the plan."""
    model, x = small_timm_vit(), torch.randn(2, 3, 32, 32)
    stream = next(g for g in trace(model, x).prunable if g.inexact)
    attrs = {m.attr for m in stream.members if m.attr}
    assert {"cls_token", "pos_embed", "gamma"} <= attrs, attrs
    small = prune(model, x, ratio={stream.id: 0.25}).model
    assert small(x).shape == model(x).shape and lint(small, x) == []
    assert small.cls_token.shape[-1] == small.pos_embed.shape[-1] == 24
    assert small.blocks[1].ls1.gamma.shape == (24,)


def test_hf_bert_heads_and_intermediate_widths_prune_exactly():
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, vocab_size=100)
    torch.manual_seed(0)
    model = randomize_weights(transformers.BertModel(config))
    x = {"input_ids": torch.randint(0, 100, (2, 8))}
    c = assert_exact(model, x, min_groups=4)
    attention = c.result.model.encoder.layer[0].attention.self
    # forward() splits heads with view(..., -1, head_size): the head count follows the width
    assert attention.query.out_features == attention.value.out_features == 16
    assert c.result.model.encoder.layer[0].attention.output.dense.in_features == 16


def test_hf_llama_grouped_query_attention_prunes_kv_heads_with_their_query_heads():
    config = transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64,
                                      vocab_size=100)
    torch.manual_seed(0)
    model = randomize_weights(transformers.LlamaForCausalLM(config))
    x = {"input_ids": torch.randint(0, 100, (2, 8)), "use_cache": False}
    c = assert_exact(model, x, min_groups=4)
    attn = c.result.model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (16, 8)
    assert attn.o_proj.in_features == 16


def test_yolov8n_from_its_yaml_prunes_exactly():
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.manual_seed(0)
    model = randomize_weights(tasks.DetectionModel("yolov8n.yaml", verbose=False))
    assert_exact(model, torch.randn(1, 3, 64, 64), min_groups=30)


def test_detection_backbone_neck_and_heads_prune_exactly_post_processing_untouched():
    import torchvision

    torch.manual_seed(0)
    model = randomize_weights(torchvision.models.get_model(
        "ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3))
    x = [[torch.rand(3, 64, 64)]]
    c = assert_exact(model, x, at="head", min_groups=20)
    detections = c.result.model(*x)
    assert isinstance(detections, list) and set(detections[0]) == {"boxes", "scores", "labels"}


def test_segmentation_prunes_exactly():
    import torchvision

    torch.manual_seed(0)
    model = randomize_weights(torchvision.models.get_model(
        "lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=3))
    c = assert_exact(model, torch.randn(1, 3, 64, 64), min_groups=20)
    assert [tuple(t.shape) for t in tensors_of(c.result.model(torch.randn(1, 3, 64, 64)))] == [
        (1, 3, 64, 64)]


# Issue 11: a reshape sized by the stream's width read from x.shape (graphs/sizes.py), as
# benchmarks/coverage_models.json builds them.
STREAM_WIDTH_SIZED = {"convit_tiny": {"img_size": 64}, "edgenext_xx_small": {}, "pvt_v2_b0": {}}


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(STREAM_WIDTH_SIZED))
def test_timm_models_whose_reshapes_read_the_stream_width_prune_exactly(name):
    torch.manual_seed(0)
    model = randomize_weights(timm.create_model(name, num_classes=10,
                                                **STREAM_WIDTH_SIZED[name]))
    x = torch.randn(1, 3, 64, 64)
    c = assert_exact(model, x, min_groups=8)  # at least every MLP hidden width
    assert lint(c.result.model, x) == []
    assert any("read from these channels" in g.reason for g in c.graph.groups)
