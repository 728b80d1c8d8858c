"""Deterministic chunk layout of a flattened model vector.

Every site derives the same layout from the model's parameter shapes and the chunk size
(the number of real values one ciphertext carries), so chunk ``i`` means the same slice of
the model everywhere. The layout has a fingerprint that travels with every update.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ChunkLayout:
    """Cut of a flat vector of ``total`` values into chunks of ``chunk_size`` values.

    The flat vector is the concatenation, in order, of the parameters named in ``shapes``
    (row-major). Chunk ``i`` covers ``[i * chunk_size, min((i + 1) * chunk_size, total))``.
    """

    shapes: tuple[tuple[str, Shape], ...]
    chunk_size: int

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if not self.shapes:
            raise ValueError("shapes must name at least one parameter")
        for name, shape in self.shapes:
            if any(int(s) <= 0 for s in shape):
                raise ValueError(f"parameter {name!r} has a non-positive dimension: {shape}")

    @classmethod
    def from_shapes(
        cls, shapes: Sequence[tuple[str, Sequence[int]]], chunk_size: int
    ) -> ChunkLayout:
        return cls(tuple((str(n), tuple(int(s) for s in sh)) for n, sh in shapes), int(chunk_size))

    @property
    def total(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    @property
    def n_chunks(self) -> int:
        return -(-self.total // self.chunk_size)

    def chunk_slice(self, chunk_id: int) -> slice:
        if not 0 <= chunk_id < self.n_chunks:
            raise ValueError(f"chunk id {chunk_id} outside [0, {self.n_chunks})")
        start = chunk_id * self.chunk_size
        return slice(start, min(start + self.chunk_size, self.total))

    def chunk_bounds(self) -> list[tuple[int, int]]:
        """``(start, stop)`` of every chunk, in order."""
        return [(s.start, s.stop) for s in map(self.chunk_slice, range(self.n_chunks))]

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical JSON of shapes and chunk size."""
        canon = json.dumps(
            {"shapes": [[n, list(s)] for n, s in self.shapes], "chunk_size": self.chunk_size},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canon.encode()).hexdigest()
