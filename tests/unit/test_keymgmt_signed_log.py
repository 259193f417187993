"""keymgmt's signing rule for audit checkpoints (keys/signed_log.py): a tree is signed only if it
does not go backwards and a consistency proof, checked by keymgmt against its own record of
the last checkpoint it signed, shows it extends that one. The real endpoint, HSM and record:
tests/integration/test_audit_witness.py."""

from __future__ import annotations

import pytest

from services.audit.merkle import consistency_ranges, extend, hash_leaf, range_hash
from services.keymgmt.keys.signed_log import (
    CheckpointInconsistent,
    CheckpointOldSizeMismatch,
    CheckpointSizeBackwards,
    SignedCheckpoint,
    check_extends,
)
from shared.keymgmt.contract import CheckpointToSign, Refusal


def tree(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    hashes = [hash_leaf(x) for x in leaves]
    _, _, nodes = extend([], 0, hashes)
    return {(0, i): h for i, h in enumerate(hashes)} | {(a, b): h for a, b, h in nodes}


HONEST = tree([b"e%d" % i for i in range(30)])
REWRITTEN = tree([b"e%d" % i if i != 5 else b"e5 rewritten" for i in range(30)])


def last(n: int) -> SignedCheckpoint:
    return SignedCheckpoint("cardbureau/audit", n, range_hash(0, n, HONEST), "note")


def ask(stored: dict[tuple[int, int], bytes], old: int, n: int) -> CheckpointToSign:
    proof = [range_hash(a, b, stored).hex() for a, b in consistency_ranges(old, n)]
    root = range_hash(0, n, stored).hex()
    return CheckpointToSign(
        origin="cardbureau/audit", tree_size=n, root_hash=root, old_size=old, proof=proof
    )


def test_a_tree_that_extends_the_last_signed_one_is_signed() -> None:
    check_extends(None, ask(HONEST, 0, 10))  # the first one: nothing to extend
    check_extends(last(10), ask(HONEST, 10, 25))
    check_extends(last(10), ask(HONEST, 10, 10))  # the same head again


def test_the_rewrite_and_re_sign_attack_is_refused_by_name() -> None:
    # Entry 5 replaced after checkpoint 10 was signed: no proof from keymgmt's record exists.
    with pytest.raises(CheckpointInconsistent) as refused:
        check_extends(last(10), ask(REWRITTEN, 10, 25))
    assert refused.value.refusal == Refusal.CHECKPOINT_INCONSISTENT
    assert "not consistent with the checkpoint of size 10" in str(refused.value)
    with pytest.raises(CheckpointInconsistent):
        check_extends(last(10), ask(REWRITTEN, 10, 10))  # same size, another root


def test_going_backwards_or_proving_from_another_size_is_refused() -> None:
    with pytest.raises(CheckpointSizeBackwards) as backwards:
        check_extends(last(10), ask(HONEST, 0, 9))
    assert backwards.value.refusal == Refusal.CHECKPOINT_SIZE_BACKWARDS
    with pytest.raises(CheckpointOldSizeMismatch, match="keymgmt last signed 10"):
        check_extends(last(10), ask(HONEST, 8, 25))  # a proof from a size keymgmt never signed
    with pytest.raises(CheckpointOldSizeMismatch):
        check_extends(last(10), ask(REWRITTEN, 0, 25))  # "start over from nothing"
