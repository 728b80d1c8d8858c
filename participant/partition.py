"""Simulation partitions: a fixed stratified held-out validation set plus non-identical sites.

Everything returns index arrays into the full data set. The validation split depends only on
``validation_seed`` (so it stays fixed while the site split varies with ``seed``). Sites are
disjoint and together cover every non-validation row.

* :func:`dirichlet_partition`: for every group (label x stratum) draw site proportions from
  ``Dirichlet(alpha)`` and deal the group's rows out accordingly. Small ``alpha`` means strong
  skew in both label mix and site size (unbalanced sites); large ``alpha`` approaches IID.
* :func:`column_partition`: the distinct values of a named column, sorted, are dealt out to
  sites in contiguous blocks of roughly equal row count (e.g. one site per hospital id).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "Partition",
    "PartitionError",
    "column_partition",
    "dirichlet_partition",
    "holdout_split",
    "make_partition",
]

_MAX_DRAWS = 1000


class PartitionError(ValueError):
    """The requested partition cannot be built; the message says which argument."""


@dataclass(frozen=True)
class Partition:
    """``sites[k]`` and ``validation`` are sorted int64 index arrays into the data set."""

    sites: tuple[np.ndarray, ...]
    validation: np.ndarray

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def train(self) -> np.ndarray:
        """All site rows together, sorted."""
        return np.sort(np.concatenate(self.sites))


def _groups(labels: np.ndarray, strata: np.ndarray | None) -> np.ndarray:
    lab = np.asarray(labels)
    if strata is None:
        keys = lab.astype(np.float64).reshape(-1, 1)
    else:
        st = np.asarray(strata)
        if st.shape != lab.shape:
            raise PartitionError(f"strata: shape {st.shape} differs from labels {lab.shape}")
        keys = np.stack([lab.astype(np.float64), st.astype(np.float64)], axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    return np.asarray(group, dtype=np.int64).reshape(-1)


def holdout_split(
    labels: np.ndarray,
    strata: np.ndarray | None = None,
    fraction: float = 0.15,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) index arrays, stratified by label x stratum."""
    if not 0.0 < fraction < 1.0:
        raise PartitionError(f"fraction: {fraction} must be in (0, 1)")
    group = _groups(labels, strata)
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        rng.shuffle(members)
        val.append(members[: round(fraction * len(members))])
    validation = np.sort(np.concatenate(val)).astype(np.int64)
    mask = np.ones(len(group), dtype=bool)
    mask[validation] = False
    return np.flatnonzero(mask).astype(np.int64), validation


def dirichlet_partition(
    indices: np.ndarray,
    labels: np.ndarray,
    strata: np.ndarray | None = None,
    n_sites: int = 13,
    alpha: float = 1.0,
    seed: int = 0,
    min_size: int = 10,
) -> tuple[np.ndarray, ...]:
    """Split ``indices`` into ``n_sites`` disjoint, covering, non-identical sites.

    ``labels``/``strata`` are indexed by the values in ``indices`` (full-data-set arrays).
    Draws are repeated until every site has at least ``min_size`` rows.
    """
    idx = np.asarray(indices, dtype=np.int64)
    if n_sites < 1:
        raise PartitionError(f"n_sites: {n_sites} must be >= 1")
    if not alpha > 0:
        raise PartitionError(f"alpha: {alpha} must be > 0")
    if n_sites * min_size > len(idx):
        raise PartitionError(
            f"n_sites: {n_sites} sites of at least {min_size} rows need {n_sites * min_size} "
            f"rows, only {len(idx)} available"
        )
    group = _groups(np.asarray(labels)[idx], None if strata is None else np.asarray(strata)[idx])
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DRAWS):
        buckets: list[list[np.ndarray]] = [[] for _ in range(n_sites)]
        for g in np.unique(group):
            members = idx[group == g]
            members = members[rng.permutation(len(members))]
            share = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(share)[:-1] * len(members)).astype(np.int64)
            for k, part in enumerate(np.split(members, cuts)):
                buckets[k].append(part)
        sites = tuple(np.sort(np.concatenate(b)).astype(np.int64) for b in buckets)
        if min(len(s) for s in sites) >= min_size:
            return sites
    raise PartitionError(
        f"alpha: no draw in {_MAX_DRAWS} gave every one of {n_sites} sites >= {min_size} rows; "
        "raise alpha or lower n_sites"
    )


def column_partition(
    indices: np.ndarray, values: np.ndarray, n_sites: int
) -> tuple[np.ndarray, ...]:
    """Sites by a named column: its sorted distinct values in contiguous, count-balanced blocks."""
    idx = np.asarray(indices, dtype=np.int64)
    vals = np.asarray(values)[idx]
    levels, counts = np.unique(vals, return_counts=True)
    if n_sites < 1 or len(levels) < n_sites:
        raise PartitionError(
            f"n_sites: {n_sites} sites need at least that many distinct column values, "
            f"found {len(levels)}"
        )
    # Greedy contiguous blocks: close a block once it holds its share of the remaining rows.
    blocks: list[list[int]] = [[] for _ in range(n_sites)]
    remaining = int(counts.sum())
    site = 0
    filled = 0
    for j, c in enumerate(counts):
        blocks[site].append(j)
        filled += int(c)
        levels_left = len(levels) - j - 1
        sites_left = n_sites - site - 1
        target = remaining / (sites_left + 1)
        if sites_left > 0 and (filled >= target or levels_left == sites_left):
            remaining -= filled
            filled = 0
            site += 1
    return tuple(np.sort(idx[np.isin(vals, levels[b])]).astype(np.int64) for b in blocks)


def make_partition(
    labels: np.ndarray,
    strata: np.ndarray | None = None,
    *,
    n_sites: int = 13,
    alpha: float = 1.0,
    seed: int = 0,
    validation_fraction: float = 0.15,
    validation_seed: int = 0,
    column: np.ndarray | None = None,
    min_size: int = 10,
) -> Partition:
    """The fixed stratified validation set, then sites by Dirichlet skew or by ``column``."""
    train, validation = holdout_split(labels, strata, validation_fraction, validation_seed)
    if column is not None:
        sites = column_partition(train, column, n_sites)
    else:
        sites = dirichlet_partition(train, labels, strata, n_sites, alpha, seed, min_size)
    logger.debug(
        "partition: %d sites, sizes %s, validation %d",
        len(sites),
        [len(s) for s in sites],
        len(validation),
    )
    return Partition(sites=sites, validation=validation)
