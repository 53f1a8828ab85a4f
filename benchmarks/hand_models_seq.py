"""Hand-written sequence models for ``coverage.py``'s ``hand`` source (see ``hand_models``):
recurrent layers, tied embeddings, attention written several ways, experts held as 3-D
parameters and a Mamba-style selective scan. Token inputs are 1xL ids below ``VOCAB``.

Example:
    >>> import torch
    >>> model = SEQUENCE_MODELS["lstm_tagger"]().eval()
    >>> tuple(model(torch.zeros(1, 5, dtype=torch.long)).shape)
    (1, 5, 10)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

VOCAB, DIM = 100, 32


class LSTMTagger(nn.Module):
    """Embedding -> LSTM -> Linear: one tag per token."""

    def __init__(self, hidden: int = 48, tags: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.lstm = nn.LSTM(DIM, hidden, batch_first=True)
        self.tag = nn.Linear(hidden, tags)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tag(self.lstm(self.embed(ids))[0])


class GRUClassifier(nn.Module):
    """Embedding -> bidirectional GRU -> mean over time -> Linear."""

    def __init__(self, hidden: int = 24, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.gru = nn.GRU(DIM, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gru(self.embed(ids))[0].mean(1))


class TiedLM(nn.Module):
    """A tiny LM whose output head shares the embedding matrix (``head.weight = embed.weight``)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, hidden), nn.GELU(), nn.Linear(hidden, DIM))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(self.norm(x + self.mlp(x)))


class Encoder(nn.Module):
    """Embedding -> ``nn.TransformerEncoder`` (2 layers) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        layer = nn.TransformerEncoderLayer(DIM, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(DIM, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(self.embed(ids)))


class CrossAttention(nn.Module):
    """Queries from tokens, keys and values from other features: ``nn.MultiheadAttention``
    with ``kdim`` and ``vdim``."""

    def __init__(self, kdim: int = 24, vdim: int = 16) -> None:
        super().__init__()
        self.query = nn.Linear(16, DIM)
        self.keys, self.values = nn.Linear(8, kdim), nn.Linear(8, vdim)
        self.attn = nn.MultiheadAttention(DIM, 4, kdim=kdim, vdim=vdim, batch_first=True)
        self.fc = nn.Linear(DIM, 10)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.query(x)
        out, _ = self.attn(q, self.keys(memory), self.values(memory), need_weights=False)
        return self.fc(q + out)


class EinsumAttention(nn.Module):
    """Self-attention written with ``torch.einsum`` over (batch, head, token, dim)."""

    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(DIM, DIM) for _ in range(3))
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1) for f in (self.q, self.k, self.v))
        scores = torch.einsum("bihd,bjhd->bhij", q, k) / q.shape[-1] ** 0.5
        out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)
        return x + self.proj(out.reshape(b, n, -1))


class FusedQKV(nn.Module):
    """One ``qkv`` Linear, sliced into q, k and v, then per-head SDPA and a projection."""

    def __init__(self, heads: int = 4) -> None:
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x)
        q, k, v = (qkv[..., i * c:(i + 1) * c].reshape(b, n, self.heads, -1).transpose(1, 2)
                   for i in range(3))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return x + self.proj(out)


class MoE(nn.Module):
    """A mixture-of-experts MLP: experts as 3-D parameters, a softmax router, ``torch.bmm``."""

    def __init__(self, experts: int = 4, hidden: int = 48) -> None:
        super().__init__()
        self.router = nn.Linear(DIM, experts)
        self.w_in = nn.Parameter(torch.randn(experts, DIM, hidden) / DIM**0.5)
        self.w_out = nn.Parameter(torch.randn(experts, hidden, DIM) / hidden**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        gates = self.router(tokens).softmax(-1)  # (T, E)
        each = tokens.unsqueeze(0).expand(self.w_in.shape[0], -1, -1)  # (E, T, D)
        out = torch.bmm(F.gelu(torch.bmm(each, self.w_in)), self.w_out)  # (E, T, D)
        return x + torch.einsum("te,etd->td", gates, out).view_as(x)


class MambaBlock(nn.Module):
    """in_proj -> depthwise causal conv1d -> selective scan (a loop over tokens) -> out_proj."""

    def __init__(self, inner: int = 64, state: int = 8, rank: int = 4) -> None:
        super().__init__()
        self.in_proj = nn.Linear(DIM, 2 * inner)
        self.conv = nn.Conv1d(inner, inner, 4, groups=inner, padding=3)
        self.x_proj = nn.Linear(inner, rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(rank, inner)
        self.A_log = nn.Parameter(torch.randn(inner, state))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, DIM)
        self.rank, self.state = rank, state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, z = self.in_proj(x).chunk(2, -1)
        u = F.silu(self.conv(u.transpose(1, 2))[..., : x.shape[1]]).transpose(1, 2)
        dt, b, c = self.x_proj(u).split((self.rank, self.state, self.state), -1)
        y = scan(u, F.softplus(self.dt_proj(dt)), -self.A_log.exp(), b, c) + u * self.D
        return x + self.out_proj(y * F.silu(z))


def scan(u: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
         c: torch.Tensor) -> torch.Tensor:
    """The selective scan h_t = exp(dt A) h_{t-1} + dt B_t u_t, y_t = C_t h_t (u, dt: BxLxD)."""
    h = u.new_zeros(u.shape[0], u.shape[2], a.shape[1])
    ys = []
    for t in range(u.shape[1]):
        decay = torch.exp(dt[:, t, :, None] * a)
        h = decay * h + (dt[:, t, :, None] * b[:, t, None, :]) * u[:, t, :, None]
        ys.append((h * c[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


def token_model(block: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Embedding -> ``block()`` -> Linear(DIM, 10): a constructor taking token ids."""
    def make() -> nn.Module:
        return nn.Sequential(nn.Embedding(VOCAB, DIM), block(), nn.Linear(DIM, 10))
    make.__doc__ = f"Embedding -> {block.__name__} -> Linear."
    return make


SEQUENCE_MODELS: dict[str, Callable[[], nn.Module]] = {
    "lstm_tagger": LSTMTagger,
    "bigru_classifier": GRUClassifier,
    "tied_lm": TiedLM,
    "transformer_encoder": Encoder,
    "mha_cross_attention": CrossAttention,
    "einsum_attention": token_model(EinsumAttention),
    "fused_qkv_attention": token_model(FusedQKV),
    "moe_mlp": token_model(MoE),
    "mamba_block": token_model(MambaBlock),
}
