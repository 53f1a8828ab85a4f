"""ResNeSt's split attention on a small hand-written model: the radix split of a pooled map is a
split into groups (not attention heads), and a size read from another tensor that a later op
couples with the reshaped one follows pruning."""

import torch
import torch.nn.functional as F
from torch import nn

from graphs import trace
from surgery.testing.oracle import check, randomize_norms


class SplitAttention(nn.Module):
    """timm's SplitAttn with RadixSoftmax, radix 2, cardinality 1."""

    def __init__(self, chs=6, radix=2, attn=4):
        super().__init__()
        self.radix, self.cardinality = radix, 1
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, chs * radix, 3, padding=1, groups=radix)
        self.bn0 = nn.BatchNorm2d(chs * radix)
        self.fc1, self.fc2 = nn.Conv2d(chs, attn, 1), nn.Conv2d(attn, chs * radix, 1)
        self.head = nn.Conv2d(chs, 4, 1)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv(self.stem(x))))
        B, RC, H, W = x.shape
        x = x.reshape((B, self.radix, RC // self.radix, H, W))
        gap = F.relu(self.fc1(x.sum(dim=1).mean((2, 3), keepdim=True)))
        attn = self.fc2(gap).view(B, self.cardinality, self.radix, -1).transpose(1, 2)
        attn = F.softmax(attn, dim=1).reshape(B, -1).view(B, -1, 1, 1)
        out = (x * attn.reshape((B, self.radix, RC // self.radix, 1, 1))).sum(dim=1)
        return self.head(out)


def test_split_attention_prunes_the_radix_groups_exactly():
    model = randomize_norms(SplitAttention().eval())
    c = check(model, torch.randn(2, 3, 5, 5), 0.5)
    assert c.removed == c.dead and c.shape_kept and c.error <= 1e-4 and c.output_scale > 1e-6
    group = next(g for g in c.graph.prunable if "fc2" in g.modules())
    conv = next(m for m in group.members if m.module == "conv" and m.role == "out")
    assert group.channels == 6 and conv.indices[1] == (1, 7)  # position j of both radix halves
    small = c.result.model
    assert small.conv.out_channels == small.fc2.out_channels == 2 * small.head.in_channels == 6


def test_a_size_read_from_a_tensor_never_coupled_still_blocks():
    class Other(SplitAttention):
        def forward(self, x):
            x = F.relu(self.bn0(self.conv(self.stem(x))))
            B, RC = x.shape[:2]
            attn = self.fc2(F.relu(self.fc1(x[:, :6].mean((2, 3), keepdim=True))))
            return self.head(attn.reshape((B, self.radix, RC // self.radix, 1, 1)).sum(dim=1))

    model = Other()
    model.radix = 2
    graph = trace(model, torch.randn(2, 3, 5, 5))
    fc2 = graph.groups_of("fc2")[-1]
    assert not fc2.prunable and "a size computed from other dims" in fc2.reason
