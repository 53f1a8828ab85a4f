"""Never silent: prune() warns when most channels are blocked or layers are read by no rule,
naming the reasons and where they come from; well-covered models prune without a word."""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from graphs import trace
from surgery import prune
from surgery.io.models import LeNet
from surgery.plan.blocked import BlockedWarning, blocked_summary


class Shuffled(nn.Module):
    """Two 64-channel convs, each followed by a channel shuffle with literal sizes (8 x 8)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        b, _, h, w = x.shape
        x = self.c1(x).view(b, 8, 8, h, w).transpose(1, 2).reshape(b, 64, h, w)
        x = self.c2(x).view(b, 8, 8, h, w).transpose(1, 2).reshape(b, 64, h, w)
        return self.fc(x.mean((2, 3)))


class Spectral(nn.Module):
    """A conv whose channels go through an FFT over the channel dim: every channel mixed."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 16, 3), nn.Conv2d(16, 4, 3)

    def forward(self, x):
        return self.c2(torch.fft.fft(self.c1(x), dim=1).real)


class Spare(nn.Module):
    """A prunable MLP with a layer it never calls (an auxiliary head, say)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.aux = nn.Linear(8, 32), nn.Linear(32, 4), nn.Linear(32, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


X = torch.zeros(1, 3, 8, 8)


def test_literal_channel_shuffle_warns_with_its_reason_and_source_line():
    with pytest.warns(BlockedWarning, match=r"0\.0% of the channels are prunable") as record:
        result = prune(Shuffled(), X, ratio=0.5)
    message = str(record[0].message)
    assert "128 channels in 2 groups: view has a literal channel size 8" in message
    assert "test_blocked.py:27: x = self.c1(x).view(b, 8, 8, h, w)" in message
    assert "`surgery graph MODEL`" in message and "print(result.graph)" in message
    assert issubclass(record[0].category, UserWarning)
    assert record[0].filename == __file__  # points at the caller of prune()
    assert result.params_after == result.params_before


def test_unsupported_op_warns_naming_the_op():
    with pytest.warns(UserWarning, match="unsupported op fft_fft"):
        prune(Spectral(), X, ratio=0.5)


def test_layer_no_rule_reads_warns_even_when_the_rest_is_prunable():
    with pytest.warns(BlockedWarning, match=r"kept as they are: aux \(Linear\)") as record:
        prune(Spare(), torch.zeros(2, 8), ratio=0.5)
    assert "100.0% of the channels are prunable (32 of 32 inside the model)" in \
        str(record[0].message)


def test_summary_counts_channels_by_reason_with_node_names_merged():
    model = Shuffled()
    found = blocked_summary(model, trace(model, X))
    assert (found.prunable, found.channels, found.fraction, found.worrying) == (0, 128, 0.0, True)
    [blocker] = found.blockers  # node view and node view_1: one reason
    assert (blocker.reason, blocker.channels, blocker.groups) == (
        "view has a literal channel size 8", 128, 2)
    assert blocker.source.endswith("test_blocked.py:27: x = self.c1(x).view(b, 8, 8, h, w)"
                                   ".transpose(1, 2).reshape(b, 64, h, w)")
    assert blocker.layers == ("c1", "c2") and found.untouched == ()


def test_unsupported_op_takes_its_source_from_the_graph():
    model = Spectral()
    blocker = blocked_summary(model, trace(model, X)).blockers[0]
    assert blocker.reason == "unsupported op fft_fft"
    assert "test_blocked.py:40: return self.c2(torch.fft.fft(self.c1(x), dim=1).real)" in \
        blocker.source


def test_lenet_prunes_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = prune(LeNet(), torch.zeros(1, 1, 28, 28), ratio=0.5)
    assert result.params_after == 11_418


def test_resnet18_is_fully_prunable_inside_its_input_and_output():
    model = torchvision.models.resnet18().eval()
    found = blocked_summary(model, trace(model, torch.zeros(1, 3, 32, 32)))
    assert found.fraction == 1.0 and not found.worrying
    assert found.channels == found.prunable > 0 and found.blockers == ()
