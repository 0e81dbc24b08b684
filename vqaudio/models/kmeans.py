"""Nearest-code search and k-means for codebooks, in chunks so memory stays small for large K."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

_CHUNK_ELEMENTS = 1 << 24  # distance-matrix entries computed at once (64 MB of float32)


def nearest_code(flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_k ||flat_i - codebook_k||^2 for every row of `flat` [N, D] (int64 [N]).

    ||x||^2 is the same for every code, so it is left out: argmin (||e||^2 - 2 x.e). Rows are
    processed in chunks so that K = 4096 over 64,000 vectors needs 64 MB, not 1 GB.
    """
    norms = codebook.pow(2).sum(1)
    rows = max(1, _CHUNK_ELEMENTS // max(1, codebook.shape[0]))
    out = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
    for start in range(0, flat.shape[0], rows):
        block = flat[start : start + rows]
        out[start : start + rows] = torch.addmm(norms, block, codebook.t(), alpha=-2.0).argmin(1)
    return out


def kmeans(data: torch.Tensor, centroids: torch.Tensor, iters: int, cosine: bool = False) -> torch.Tensor:
    """Lloyd's iterations from `centroids` [K, D] over `data` [N, D]; an empty cluster keeps its
    centroid. Cluster sums and sizes are summed over ranks under torch.distributed, so every rank
    ends with the same centroids from everyone's data."""
    centroids = centroids.clone()
    distributed = dist.is_available() and dist.is_initialized()
    for _ in range(iters):
        assign = nearest_code(data, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, data)
        sizes = torch.bincount(assign, minlength=centroids.shape[0]).to(data.dtype)
        if distributed:
            dist.all_reduce(sums)
            dist.all_reduce(sizes)
        filled = sizes > 0
        updated = sums / sizes.clamp_min(1)[:, None]
        if cosine:
            updated = F.normalize(updated, dim=1)
        centroids = torch.where(filled[:, None], updated, centroids)
    return centroids
