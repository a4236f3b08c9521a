"""MoCo v2 (He et al. 2020; Chen et al. 2020), as MoCo-CXR (Sowrirajan et al. 2021) pretrained on CheXpert.

A query encoder and its exponential moving average (the key encoder) embed two views of each image; the loss is
InfoNCE of each query against its own key and a queue of keys from earlier batches. The queue gives thousands of
negatives at any batch size, which is why MoCo rather than SimCLR: the paper's batch is 16, a CPU's is small.

MoCo shuffles batch norm across GPUs so a query and its key never share batch statistics (otherwise the
network can match them by the statistics alone). On one device the same is had by normalising in groups: the
batch is cut into `bn_splits` groups for each forward pass, and the keys are shuffled before they are grouped.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def projection_head(width: int, dim: int) -> nn.Module:
    """MoCo v2's 2-layer MLP on the pooled features; thrown away after pretraining."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, dim))


class Encoder(nn.Module):
    """Backbone (pooled features, the family's network with its classifier removed) + projection head."""

    def __init__(self, backbone: nn.Module, width: int, dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = projection_head(width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if f.ndim == 4:
            f = f.mean(dim=(2, 3))
        return F.normalize(self.head(f.float()), dim=1)


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, width: int, *, dim: int, queue: int, temperature: float,
                 momentum: float, bn_splits: int) -> None:
        super().__init__()
        self.query = Encoder(backbone, width, dim)
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.temperature, self.momentum, self.bn_splits = temperature, momentum, bn_splits
        # Filled with real keys by `fill_queue` before the first step; random unit vectors would be negatives
        # far easier than real ones, and the loss would first rise for no reason but the queue filling.
        self.register_buffer("queue", F.normalize(torch.randn(queue, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _grouped(self, encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([encoder(chunk) for chunk in x.chunk(self.bn_splits)])

    @torch.no_grad()
    def _update_key_encoder(self) -> None:
        for k, q in zip(self.key.parameters(), self.query.parameters(), strict=True):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)
        for k, q in zip(self.key.buffers(), self.query.buffers(), strict=True):
            k.copy_(q)  # batch-norm running statistics follow the query encoder

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        n, ptr = keys.shape[0], int(self.queue_ptr)
        self.queue[ptr:ptr + n] = keys
        self.queue_ptr.fill_((ptr + n) % self.queue.shape[0])

    @torch.no_grad()
    def fill_queue(self, views: torch.Tensor, batch_size: int) -> None:
        """Fill the queue with the key encoder's embeddings of `views` (queue-size images), a batch at a time."""
        keys = torch.cat([self._grouped(self.key, chunk) for chunk in views.split(batch_size)])
        self.queue.copy_(keys.float())
        self.queue_ptr.zero_()

    def forward(self, view_q: torch.Tensor, view_k: torch.Tensor,
                shuffle: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """InfoNCE loss of a batch, and the fraction of queries whose own key scored highest (a health check).

        `shuffle` is a permutation of the batch (given, so that it comes from the step's seeded generator).
        """
        q = self._grouped(self.query, view_q)
        with torch.no_grad():
            self._update_key_encoder()
            k = self._grouped(self.key, view_k[shuffle])[torch.argsort(shuffle)]
        positive = (q * k).sum(dim=1, keepdim=True)
        negative = q @ self.queue.clone().T
        logits = torch.cat([positive, negative], dim=1) / self.temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, target)
        top1 = (logits.argmax(dim=1) == 0).float().mean().detach()
        self._enqueue(k)
        return loss, top1
