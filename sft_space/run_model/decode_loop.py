"""fast_decode's layer loop for one token, as one function TorchScript compiles (fast_decode._scripted_layers):
the same ops as Decoder.step's Python loop, without Python between them. Imports torch: loaded only when a reply
decodes."""

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def layer_loop(
    hidden: Tensor,
    norms1: List[Tensor],
    eps1: List[float],
    norms2: List[Tensor],
    eps2: List[float],
    qkv: List[Tensor],
    qkv_bias: List[Optional[Tensor]],
    o: List[Tensor],
    o_bias: List[Optional[Tensor]],
    gate_up: List[Tensor],
    gate_up_bias: List[Optional[Tensor]],
    down: List[Tensor],
    down_bias: List[Optional[Tensor]],
    keys_values: List[Tensor],
    cos_rows: Tensor,
    sin_rows: Tensor,
    rotated: Tensor,
    normed: Tensor,
    attended: Tensor,
    position: int,
    heads: int,
    kv_heads: int,
    dim: int,
) -> Tensor:
    """Decoder.step's layer loop, op for op."""
    rows = heads + 2 * kv_heads
    end = position + 1
    for i in range(len(qkv)):
        projected = _product(qkv[i], qkv_bias[i], _rms(hidden, norms1[i], eps1[i], normed)).view(rows, dim)
        torch.mul(projected, cos_rows, out=rotated)
        rotated.addcmul_(projected.roll(dim // 2, -1), sin_rows)
        both = keys_values[i]
        both[:, :, position] = rotated[heads:].view(2, kv_heads, dim)
        out = F.scaled_dot_product_attention(
            rotated[:heads].view(1, heads, 1, dim), both[0:1, :, :end], both[1:2, :, :end], enable_gqa=True
        )
        hidden += _product(o[i], o_bias[i], attended.copy_(out.view(-1)))
        projected = _product(gate_up[i], gate_up_bias[i], _rms(hidden, norms2[i], eps2[i], normed))
        half = projected.shape[0] // 2
        hidden += _product(down[i], down_bias[i], F.silu(projected[:half]).mul_(projected[half:]))
    return hidden


def _rms(hidden: Tensor, weight: Tensor, eps: float, out: Tensor) -> Tensor:
    """fast_decode._rms: the RMSNorm of one fp32 vector into `out`."""
    scale = 1.0 / math.sqrt(float(hidden.dot(hidden)) / hidden.shape[0] + eps)
    return torch.mul(torch.mul(hidden, scale), weight, out=out)


def _product(weight: Tensor, bias: Optional[Tensor], x: Tensor) -> Tensor:
    """fast_decode._products for one side-by-side block: one torch.mv, then the bias."""
    out = torch.mv(weight, x)
    if bias is not None:
        out.add_(bias)
    return out
