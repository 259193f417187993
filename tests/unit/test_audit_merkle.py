"""The Merkle tree against a direct transcription of RFC 6962 section 2.1's recursion."""

from __future__ import annotations

import hashlib

import pytest

from services.audit.merkle import (
    EMPTY_ROOT,
    consistency_ranges,
    extend,
    fold,
    hash_children,
    hash_leaf,
    inclusion_ranges,
    nodes_of,
    perfect_subtrees,
    range_hash,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [hash_leaf(f"entry {i}".encode()) for i in range(70)]


def mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as the RFC writes it (over leaf hashes)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hash_children(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


def stored_tree(size: int) -> dict[tuple[int, int], bytes]:
    _, built, nodes = extend([], 0, LEAVES[:size])
    assert built == size
    return {(0, i): leaf for i, leaf in enumerate(LEAVES[:size])} | {
        (level, index): h for level, index, h in nodes
    }


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == hashlib.sha256(b"").hexdigest()
    assert hash_leaf(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 70])
def test_the_compact_range_gives_the_rfc_root(size: int) -> None:
    frontier, _, _ = extend([], 0, LEAVES[:size])
    assert fold(frontier) == mth(LEAVES[:size])
    assert len(frontier) == len(perfect_subtrees(0, size)) == bin(size).count("1")


def test_extending_in_steps_equals_extending_at_once() -> None:
    frontier: list[bytes] = []
    size, stored = 0, []
    for step in (1, 2, 7, 1, 30, 29):
        frontier, size, nodes = extend(frontier, size, LEAVES[size : size + step])
        stored.extend(nodes)
    assert size == 70
    assert sorted(stored) == sorted(extend([], 0, LEAVES)[2])


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 31, 70])
def test_inclusion_proofs_match_the_rfc_and_verify(size: int) -> None:
    stored, root = stored_tree(size), mth(LEAVES[:size])
    for index in range(size):
        ranges = inclusion_ranges(index, size)
        assert nodes_of(ranges) <= stored.keys()
        proof = [range_hash(a, b, stored) for a, b in ranges]
        assert proof == path(index, LEAVES[:size])
        assert verify_inclusion(index, size, LEAVES[index], proof, root)
        assert not verify_inclusion(index, size, hash_leaf(b"other"), proof, root)
        assert not verify_inclusion(index, size, LEAVES[index], proof, hash_leaf(b"x"))
        if proof:
            assert not verify_inclusion(index, size, LEAVES[index], proof[:-1], root)


@pytest.mark.parametrize("second", [1, 2, 3, 4, 6, 8, 11, 16, 33, 70])
def test_consistency_proofs_match_the_rfc_and_verify(second: int) -> None:
    stored, new_root = stored_tree(second), mth(LEAVES[:second])
    for first in range(1, second + 1):
        ranges = consistency_ranges(first, second)
        proof = [range_hash(a, b, stored) for a, b in ranges]
        assert proof == (subproof(first, LEAVES[:second], True) if first < second else [])
        old_root = mth(LEAVES[:first])
        assert verify_consistency(first, second, old_root, new_root, proof)
        if first < second:
            forged = mth([*LEAVES[: first - 1], hash_leaf(b"forged")])
            assert not verify_consistency(first, second, forged, new_root, proof)
            assert not verify_consistency(first, second, old_root, forged, proof)


def test_edge_cases_are_refused() -> None:
    assert verify_consistency(0, 5, EMPTY_ROOT, mth(LEAVES[:5]), [])
    assert not verify_consistency(3, 2, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(2, 5, mth(LEAVES[:2]), mth(LEAVES[:5]), [])
    assert not verify_inclusion(5, 5, LEAVES[5], [], mth(LEAVES[:5]))
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_ranges(3, 3)
    with pytest.raises(ValueError, match="no consistency"):
        consistency_ranges(4, 3)
