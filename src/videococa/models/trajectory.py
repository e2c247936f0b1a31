"""Trajectory motion: where things are in each frame, tracked by learned soft-argmax slots, as a motion feature.

Flattened attentional pooling sees the T x N frame tokens as a set, so it cannot tell which way something moves.
The frozen patch tokens do hold *where* the object is in each frame (linear probes on them read the direction;
bench/RESULTS.md, issue 24), but learning the position x time interaction from the decoder's loss alone did not
happen in a finetuning budget. This module computes it explicitly, with few parameters:

1. K learned queries score every patch token of every frame; a softmax over the frame's patches gives each slot
   an attention map per frame (a soft-argmax: what the slot tracks is learned, where it is comes from the grid);
2. the map's expectation over the patch grid is the slot's position in that frame, (x, y) in [-1, 1];
3. per slot: the least-squares velocity of the position over time (weighted by how peaked the map is, so frames
   where the thing is absent count less), the displacement first -> last frame, and the mean and the change of
   the map's peak: motion only, no appearance (the pooler already carries what things look like);
4. an MLP maps all slots' features to one motion vector (W,), added to every frame token scaled by the token's
   RMS (frozen encoder tokens are large; a zero-initialised branch at token scale is what made a motion feature
   learnable, issue 24).

The output layer starts at zero, so a new module is exactly the identity. Every feature is a function of T
positions that works for any frame count (the velocity is defined for T >= 2; with one frame it is zero).
Reversing the frames negates the velocity and displacement, so the feature depends on frame order.
"""

from __future__ import annotations

import torch
from torch import nn

SLOT_FEATURES = 6
"""Per slot: velocity (2), displacement (2), log mean peak (1), peak change last - first (1)."""


class TrajectoryMotion(nn.Module):
    """Learned soft-argmax tracks over the patch grid -> one motion vector added to every frame token.

    `grid`: the encoder's patch grid (rows, columns); the frame tokens are `prefix` tokens (class token, ...)
    followed by rows x columns patch tokens in row-major order, as open_clip's ViT makes them.
    """

    def __init__(self, width: int, grid: tuple[int, int], *, slots: int = 8, hidden: int = 256):
        super().__init__()
        rows, cols = grid
        self.grid = (rows, cols)
        self.slots = slots
        self.ln = nn.LayerNorm(width)
        self.query = nn.Linear(width, slots, bias=False)  # (K, W) random init: slots differ from the first step
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
        self.register_buffer("grid_xy", torch.stack([xs.flatten(), ys.flatten()], -1), persistent=False)  # (P, 2)
        self.mlp = nn.Sequential(nn.Linear(slots * SLOT_FEATURES, hidden), nn.GELU(),
                                 nn.Linear(hidden, width))
        nn.init.zeros_(self.mlp[2].weight)  # the identity at init: what the module adds starts at exactly zero
        nn.init.zeros_(self.mlp[2].bias)

    def tracks(self, frame_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, N, W) -> each slot's position per frame (B, T, K, 2) in [-1, 1] and attention maps (B, T, P, K)."""
        patches = self._patches(frame_tokens)
        maps = torch.softmax(self.query(self.ln(patches)), dim=2)  # (B, T, P, K) over each frame's patches
        return torch.einsum("btpk,pd->btkd", maps, self.grid_xy), maps

    def features(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, N, W) -> per-slot trajectory features (B, K, SLOT_FEATURES)."""
        pos, maps = self.tracks(frame_tokens)  # (B, T, K, 2), (B, T, P, K)
        t = frame_tokens.shape[1]
        peak = maps.amax(2) * maps.shape[2]  # (B, T, K) 1 for a uniform map, P for one patch
        w = (peak / peak.sum(1, keepdim=True))[..., None]  # (B, T, K, 1) frame weights
        tau = torch.linspace(-1, 1, t, device=pos.device, dtype=pos.dtype)[None, :, None, None]  # (1, T, 1, 1)
        mean_pos = (w * pos).sum(1)  # (B, K, 2)
        mean_tau = (w * tau).sum(1)  # (B, K, 1)
        dt = tau - mean_tau[:, None]  # (B, T, K, 1)
        var = (w * dt * dt).sum(1).clamp_min(1e-6)  # (B, K, 1); zero for T=1, where the velocity is then zero
        velocity = (w * dt * (pos - mean_pos[:, None])).sum(1) / var  # (B, K, 2) weighted least squares
        disp = pos[:, -1] - pos[:, 0]  # (B, K, 2)
        return torch.cat([velocity, disp, peak.mean(1, keepdim=True).log().transpose(1, 2),
                          (peak[:, -1] - peak[:, 0])[..., None]], -1)  # (B, K, 6)

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        x = frame_tokens
        motion = self.mlp(self.features(x.float()).flatten(1)).to(x.dtype)  # (B, W)
        rms = x.detach().pow(2).mean(-1, keepdim=True).sqrt()  # (B, T, N, 1) each token's scale
        return x + rms * motion[:, None, None, :]  # (B, T, N, W)

    def _patches(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        rows, cols = self.grid
        n = frame_tokens.shape[2]
        if n < rows * cols:
            raise ValueError(f"frame tokens have {n} tokens per frame, fewer than the {rows}x{cols} patch grid")
        return frame_tokens[:, :, n - rows * cols:]  # (B, T, P, W) the patch tokens, after class/register tokens
