"""Feistel: a keyed permutation of `range(n)` with O(1) memory, and the rotation's cycles.

The permutation is a keyed bijection (`Bijection`): a balanced Feistel network on the
smallest even-bit-width power-of-two domain that holds the stream, shrunk to exactly
`[0, n)` by cycle-walking. It costs O(1) memory and a few microseconds per lookup whatever
`n` is, so a pair cycle over 10⁶ names × 10⁴ developers (10¹⁰ pairs) is as cheap as one
over ten. `cycle_bijection` is the order of one rotation cycle: a pure function of (stream,
seed, dataset fingerprint, cycle, size), the same on every machine (golden-pinned in
tests/test_rotation.py). This module is pure arithmetic: no files, no database, no params.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import numpy as np

#: Feistel rounds. Four make a pseudo-random permutation in theory (Luby–Rackoff); six give
#: margin for the tiny half-widths of small lists at no measurable cost.
ROUNDS = 6

#: Largest stream: indices and cursors stay well inside SQLite's signed 64-bit integers.
MAX_SIZE = 1 << 62
#: Streams up to this size alternate permutation parity between cycles (see
#: `cycle_bijection`), which guarantees that consecutive cycles differ in order. Above it,
#: equal orders in two cycles are as likely as a 64-bit key collision.
PARITY_LIMIT = 256

_M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9  # splitmix64 finalizer constants (Steele, Lea, Flood 2014)
_C2 = 0x94D049BB133111EB
_U_C1, _U_C2 = np.uint64(_C1), np.uint64(_C2)
_U30, _U27, _U31 = np.uint64(30), np.uint64(27), np.uint64(31)


def domain_bits(size: int) -> int:
    """The smallest even bit width w ≥ 2 with 2**w ≥ size (Feistel halves must be equal)."""
    bits = max(2, (size - 1).bit_length())
    return bits + (bits & 1)


def round_keys(key_material: bytes, rounds: int = ROUNDS) -> tuple[int, ...]:
    """One 64-bit key per round: blake2b(key_material ‖ round), the same on every platform."""
    return tuple(
        int.from_bytes(
            hashlib.blake2b(
                key_material + r.to_bytes(4, "big"), digest_size=8, person=b"ha.rot.round"
            ).digest(),
            "little",
        )
        for r in range(rounds)
    )


class Bijection:
    """A keyed permutation of `range(size)` with O(1) memory, scalar or vectorized.

    Why it is a bijection: each Feistel round maps (L, R) → (R, L ⊕ F(R)), which is
    invertible whatever F is ((L, R) = (R' ⊕ F(L'), L')), so the network permutes
    `[0, 2**w)`. Cycle-walking then applies the network again while the value is ≥ size.
    Starting from i < size, the walk follows i's cycle of that permutation, which returns
    to i at the latest, so it stops at some value < size; and two different starts cannot
    stop at the same value, because the walk backwards from it (the inverse network) is
    unique. The result is a permutation of `[0, size)`. Since 2**w < 4·size, a walk
    takes fewer than four network evaluations on average.

    F is a splitmix64-style multiply/xorshift mix on uint64, masked to the half width: only
    wrap-around integer arithmetic, so Python ints and numpy uint64 arrays give identical
    bits. `swap_first_two` composes the permutation with the swap of positions 0 and 1,
    which flips its parity (used by `cycle_bijection`).
    """

    __slots__ = ("_keys", "_mask", "_ukeys", "bits", "half", "rounds", "size", "swap_first_two")

    def __init__(
        self,
        size: int,
        key_material: bytes,
        *,
        rounds: int = ROUNDS,
        swap_first_two: bool = False,
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SIZE:
            raise ValueError(f"size must be an integer in [1, 2**62]; got {size!r}")
        if rounds < 4:
            raise ValueError(f"a Feistel network needs at least 4 rounds here; got {rounds}")
        self.size = size
        self.rounds = rounds
        self.bits = domain_bits(size)
        self.half = self.bits // 2
        self._mask = (1 << self.half) - 1
        self._keys = round_keys(bytes(key_material), rounds)
        self._ukeys = tuple(np.uint64(k) for k in self._keys)
        self.swap_first_two = bool(swap_first_two and size >= 2)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"Bijection(size={self.size}, bits={self.bits}, rounds={self.rounds})"

    # scalar path -------------------------------------------------------------------------

    def _encrypt(self, x: int) -> int:
        half, mask = self.half, self._mask
        left, right = x >> half, x & mask
        for key in self._keys:
            z = right ^ key
            z = ((z ^ (z >> 30)) * _C1) & _M64
            z = ((z ^ (z >> 27)) * _C2) & _M64
            left, right = right, left ^ ((z ^ (z >> 31)) & mask)
        return (left << half) | right

    def _decrypt(self, x: int) -> int:
        half, mask = self.half, self._mask
        left, right = x >> half, x & mask
        for key in reversed(self._keys):
            z = left ^ key
            z = ((z ^ (z >> 30)) * _C1) & _M64
            z = ((z ^ (z >> 27)) * _C2) & _M64
            left, right = right ^ ((z ^ (z >> 31)) & mask), left
        return (left << half) | right

    def __call__(self, position: int) -> int:
        """The index at `position` of the permuted order."""
        size = self.size
        if not 0 <= position < size:
            raise IndexError(f"position {position} outside [0, {size})")
        if self.swap_first_two and position < 2:
            position ^= 1
        x = self._encrypt(position)
        while x >= size:
            x = self._encrypt(x)
        return x

    def inverse(self, index: int) -> int:
        """The position at which `index` comes (so `inverse(self(p)) == p`)."""
        size = self.size
        if not 0 <= index < size:
            raise IndexError(f"index {index} outside [0, {size})")
        x = self._decrypt(index)
        while x >= size:
            x = self._decrypt(x)
        if self.swap_first_two and x < 2:
            x ^= 1
        return x

    # vectorized path ---------------------------------------------------------------------

    def _encrypt_array(self, x: np.ndarray) -> np.ndarray:
        half, mask = np.uint64(self.half), np.uint64(self._mask)
        left, right = x >> half, x & mask
        for key in self._ukeys:
            z = right ^ key
            z = (z ^ (z >> _U30)) * _U_C1  # uint64 arrays wrap modulo 2**64, like & _M64
            z = (z ^ (z >> _U27)) * _U_C2
            left, right = right, left ^ ((z ^ (z >> _U31)) & mask)
        return (left << half) | right

    def block(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """`[self(p) for p in range(start, start + count)]` as an int64 array, bit-identical
        to the scalar path but vectorized (cycle-walks only the values still ≥ size)."""
        if count is None:
            count = self.size - start
        if not (start >= 0 and count >= 0 and start + count <= self.size):
            raise ValueError(f"block [{start}, {start}+{count}) is outside [0, {self.size})")
        positions = np.arange(start, start + count, dtype=np.uint64)
        if self.swap_first_two and start < 2:
            positions[: 2 - start] ^= np.uint64(1)
        out = self._encrypt_array(positions)
        size = np.uint64(self.size)
        todo = np.flatnonzero(out >= size)
        while todo.size:
            walked = self._encrypt_array(out[todo])
            out[todo] = walked
            todo = todo[walked >= size]
        return out.astype(np.int64)


def permutation_block(
    domain_size: int, key_material: bytes, start: int = 0, count: int | None = None
) -> np.ndarray:
    """Positions `[start, start + count)` of the keyed permutation of `range(domain_size)`."""
    return Bijection(domain_size, key_material).block(start, count)


def cycle_key(stream: str, seed: int, fingerprint: str, cycle: int) -> bytes:
    """Key material of one cycle: a hash of everything that fixes its order."""
    canonical = json.dumps(
        {"v": 1, "stream": stream, "seed": seed, "fingerprint": fingerprint, "cycle": cycle},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return hashlib.blake2b(canonical, digest_size=32, person=b"ha.rot.cycle").digest()


def _parity(order: np.ndarray) -> int:
    """0 for an even permutation, 1 for an odd one (n minus its number of cycles)."""
    seen = np.zeros(len(order), dtype=bool)
    cycles = 0
    for start in range(len(order)):
        if not seen[start]:
            cycles += 1
            i = start
            while not seen[i]:
                seen[i] = True
                i = int(order[i])
    return (len(order) - cycles) & 1


@lru_cache(maxsize=256)
def cycle_bijection(stream: str, seed: int, fingerprint: str, cycle: int, size: int) -> Bijection:
    """The permutation of cycle `cycle` (cached: key derivation is not redone per step).

    For small streams (2 ≤ size ≤ PARITY_LIMIT) the permutation is made even in even
    cycles and odd in odd ones, by swapping its first two positions when needed: two
    consecutive cycles then can never have the same order, which a keyed hash alone would
    give a 1-in-size! chance (1 in 2 for two items). Still a pure function of the inputs.
    """
    key = cycle_key(stream, seed, fingerprint, cycle)
    bijection = Bijection(size, key)
    if 2 <= size <= PARITY_LIMIT and _parity(bijection.block()) != cycle & 1:
        bijection = Bijection(size, key, swap_first_two=True)
    return bijection
