"""Counter-based random draws: every number is a pure function of its coordinates.

A draw for (job seed, sequence index, position, sample index, stream) is the same
whatever batch, shard or device order produced it, so a rerun reproduces every record
bit-for-bit (the original scripts drew fresh unseeded noise each pass; docs/method.md §5).
Hashing uses 32-bit values held in int64 with multipliers below 2**31, so no product
overflows.
"""

from __future__ import annotations

import math
import zlib

import torch
from jaxtyping import Float, Int
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mix32(h: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
    """A two-round xorshift-multiply hash of 32-bit values (constants from C. Wellons' hash prospector)."""
    h = h ^ (h >> 16)
    h = (h * 0x21F0AAAD) & _MASK32
    h = h ^ (h >> 15)
    h = (h * 0x735A2D97) & _MASK32
    return h ^ (h >> 15)


def stream_id(name: str) -> int:
    """A stable 32-bit stream id for a named draw (independent of registry order)."""
    return zlib.crc32(name.encode())


# One salt per coordinate slot (seed, sequence, position, sample, stream): the same value in
# two slots hashes differently, and a zero coordinate does not leave the state fixed.
_SALTS = (0x9E3779B9, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1)


def token_keys(
    seed: int, sequence: Int[Tensor, " n"], position: Int[Tensor, " n"], sample: int, stream: int
) -> Int[Tensor, " n"]:
    """One 32-bit key per token: h = mix(seed'), then h = mix(h ^ c') for each coordinate c.

    Every coordinate, the seed included, is hashed on its own first (c' = mix(c ^ salt of
    its slot)), so no coordinate enters the state as a raw XOR of another: two keys
    agree only by a chance collision of 32-bit hashes, with no pattern over seeds and
    indices (folding the raw index into a seed-initialised state made seed k on sequence s
    repeat seed 0 on sequence s XOR k).
    """
    coordinates = (seed, sequence, position, sample, stream)
    hashed = [_hash_coordinate(c, salt, sequence.device) for c, salt in zip(coordinates, _SALTS, strict=True)]
    h = hashed[0].expand(sequence.shape)
    for coordinate in hashed[1:]:
        h = _mix32(h ^ coordinate)
    return h


def _hash_coordinate(value: int | Int[Tensor, " n"], salt: int, device: torch.device) -> Int[Tensor, "..."]:
    """mix(value ^ salt): a bijection of 32-bit values, so distinct values of one slot stay distinct."""
    return _mix32((torch.as_tensor(value, dtype=torch.int64, device=device) & _MASK32) ^ salt)


def _uniform(h: Int[Tensor, "..."]) -> Float[Tensor, "..."]:
    """24 hashed bits -> a float32 strictly inside (0, 1)."""
    return ((h >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def uniform(keys: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
    """One uniform draw per key."""
    return _uniform(_mix32(keys ^ 0x5BD1E995))


def gaussian(keys: Int[Tensor, " n"], dim: int) -> Float[Tensor, "n dim"]:
    """A standard normal vector per key (Box-Muller on two hashed uniforms per coordinate)."""
    coordinate = torch.arange(dim, device=keys.device, dtype=torch.int64)
    h = _mix32(keys[:, None] ^ _mix32(coordinate + 0x27D4EB2F)[None, :])  # (N, D)
    u1, u2 = _uniform(_mix32(h ^ 0x165667B1)), _uniform(_mix32(h ^ 0x61C88647))
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
