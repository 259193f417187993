"""The Merkle tree over the event log, RFC 9162 section 2.1 (no I/O here).

Leaves are the log entries in log order; leaf hash = SHA-256(0x00 || entry), node hash =
SHA-256(0x01 || left || right) (section 2.1.1). Storage keeps only *perfect, aligned* subtrees:
node (level, index) covers leaves [index * 2**level, (index + 1) * 2**level). Every subtree the
RFC's recursion names, MTH(D[a:b]), is the right fold of the perfect subtrees of [a, b), so
proofs need O(log n) stored nodes and never the whole tree. Appending keeps a compact range
(the perfect subtrees of [0, size), at most one per level) and adds ~1 node per leaf.

The verifiers implement the algorithms of sections 2.1.3.2 (inclusion) and 2.1.4.2
(consistency); the auditors' verifier (verify.py) uses them and nothing from the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from shared.tlog_proofs import hash_children, hash_leaf, verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "consistency_ranges",
    "extend",
    "fold",
    "hash_children",
    "hash_leaf",
    "inclusion_ranges",
    "perfect_subtrees",
    "verify_consistency",
    "verify_inclusion",
]

NodeId = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [start, end)
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) (section 2.1.1)


def _split(size: int) -> int:
    """The largest power of two smaller than size (size > 1)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[NodeId]:
    """The aligned perfect subtrees that make up [start, end), left to right."""
    nodes: list[NodeId] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start & ((1 << level) - 1):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from the hashes of its perfect subtrees (largest first): fold from the
    right, as the RFC's recursion splits off the largest power of two on the left."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = hash_children(left, acc)
    return acc


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form PATH(index, D[size]) (RFC 6962 2.1.1), deepest first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
    return path[::-1]


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The subtrees whose hashes form PROOF(first, D[second]) (RFC 6962 2.1.2)."""
    if not 0 <= first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    if first in (0, second):
        return []
    proof: list[Range] = []
    siblings: list[Range] = []
    m, lo, hi, whole = first, 0, second, True
    while True:
        if m == hi - lo:
            if not whole:
                proof.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            m, lo, whole = m - k, lo + k, False
    return proof + siblings[::-1]


def nodes_of(ranges: Iterable[Range]) -> set[NodeId]:
    return {node for a, b in ranges for node in perfect_subtrees(a, b)}


def range_hash(start: int, end: int, stored: dict[NodeId, bytes]) -> bytes:
    return fold([stored[node] for node in perfect_subtrees(start, end)])


def extend(
    frontier: Sequence[bytes], size: int, leaves: Iterable[bytes]
) -> tuple[list[bytes], int, list[tuple[int, int, bytes]]]:
    """Append leaves to a tree of `size` whose compact range is `frontier` (the hashes of
    perfect_subtrees(0, size)). Returns the new frontier, new size and the new internal nodes
    (level >= 1, index, hash) to store; leaves themselves are stored by the log."""
    stack = list(frontier)
    new_nodes: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        carry, level, n = leaf, 0, size
        while n & 1:  # each trailing one of the new leaf's index completes a subtree
            carry = hash_children(stack.pop(), carry)
            level += 1
            n >>= 1
            new_nodes.append((level, size >> level, carry))
        stack.append(carry)
        size += 1
    return stack, size, new_nodes
