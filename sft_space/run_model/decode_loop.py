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
    size = hidden.shape[0]
    for i in range(len(qkv)):
        torch.mul(torch.mul(hidden, 1.0 / math.sqrt(float(hidden.dot(hidden)) / size + eps1[i])), norms1[i], out=normed)
        projected = torch.mv(qkv[i], normed)
        bias = qkv_bias[i]
        if bias is not None:
            projected.add_(bias)
        projected = projected.view(rows, dim)
        torch.mul(projected, cos_rows, out=rotated)
        rotated.addcmul_(projected.roll(dim // 2, -1), sin_rows)
        both = keys_values[i]
        both[:, :, position] = rotated[heads:].view(2, kv_heads, dim)
        out = F.scaled_dot_product_attention(
            rotated[:heads].view(1, heads, 1, dim), both[0:1, :, :end], both[1:2, :, :end], enable_gqa=True
        )
        attended.copy_(out.view(-1))
        projected = torch.mv(o[i], attended)
        bias = o_bias[i]
        if bias is not None:
            projected.add_(bias)
        hidden += projected
        torch.mul(torch.mul(hidden, 1.0 / math.sqrt(float(hidden.dot(hidden)) / size + eps2[i])), norms2[i], out=normed)
        projected = torch.mv(gate_up[i], normed)
        bias = gate_up_bias[i]
        if bias is not None:
            projected.add_(bias)
        half = projected.shape[0] // 2
        projected = torch.mv(down[i], F.silu(projected[:half]).mul_(projected[half:]))
        bias = down_bias[i]
        if bias is not None:
            projected.add_(bias)
        hidden += projected
    return hidden
