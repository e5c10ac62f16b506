"""``tracker.merkle``: RFC 6962 / RFC 9162 tree heads and proofs.

Known answers first: the reference tree of the Certificate Transparency implementations (eight leaves,
its roots, and the inclusion and consistency proofs they publish), then properties against a naive
recursive transcription of the RFC's definitions, for every tree up to a few hundred leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.merkle import (
    EMPTY_ROOT,
    TreeAccumulator,
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    range_roots,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# --- the published test vectors ------------------------------------------------------------------------
# The reference tree's inputs, roots and proofs as published in google/certificate-transparency,
# cpp/merkletree/merkle_tree_test.cc (kInputs, kSHA256Roots, kSHA256Paths, kSHA256Proofs) and, the same
# values, in transparency-dev/merkle, proof/verify_test.go (leaves, roots, inclusionProofs,
# consistencyProofs; that file adds the 6 -> 7 consistency proof). The hasher's own vectors are from
# transparency-dev/merkle, rfc6962/rfc6962_test.go. Both number leaves from 1 in their path vectors;
# here indices are 0-based, as in RFC 9162.


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


LEAVES = [
    _h(text)
    for text in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
LEAF_HASHES = [leaf_hash(data) for data in LEAVES]
EMPTY_TREE_ROOT = _h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
ROOTS = {  # tree size -> root
    0: EMPTY_TREE_ROOT,
    1: _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    2: _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    3: _h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    4: _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    5: _h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    6: _h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    7: _h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    8: _h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
}
INCLUSION_PROOFS = [  # (0-based leaf index, tree size, proof)
    (0, 1, []),
    (
        0,
        8,
        [
            _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            _h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [_h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]
CONSISTENCY_PROOFS = [  # (old size, new size, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            _h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            _h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            _h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            _h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            _h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]
SOME_HASH = _h("abacaba000000000000000000000000000000000000000000060061e00123456")


def _flip(value: bytes, position: int = 0, bit: int = 8) -> bytes:
    return value[:position] + bytes([value[position] ^ bit]) + value[position + 1 :]


# --- hashing -------------------------------------------------------------------------------------------


def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert EMPTY_ROOT == EMPTY_TREE_ROOT
    assert root_from_leaf_hashes([]) == (0, EMPTY_TREE_ROOT)


def test_leaf_and_node_hashes_match_the_reference_hasher() -> None:
    assert leaf_hash(b"") == _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == _h("395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56")
    assert node_hash(b"N123", b"N456") == _h("aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb")


def test_a_node_is_never_the_leaf_of_its_children_bytes() -> None:
    left, right = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


# --- known answers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_roots_of_the_reference_tree(size: int) -> None:
    assert root_from_leaf_hashes(LEAF_HASHES[:size]) == (size, ROOTS[size])


def test_roots_while_the_reference_tree_grows() -> None:
    tree = TreeAccumulator()
    assert tree.root() == ROOTS[0]
    for size, leaf in enumerate(LEAF_HASHES, start=1):
        tree.extend([leaf])
        assert (tree.size, tree.root()) == (size, ROOTS[size])


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_PROOFS)
def test_published_inclusion_proofs(index: int, size: int, expected: list[bytes]) -> None:
    assert inclusion_proof(index, LEAF_HASHES[:size]) == expected
    assert verify_inclusion(LEAF_HASHES[index], index, size, expected, ROOTS[size])


@pytest.mark.parametrize(("old_size", "new_size", "expected"), CONSISTENCY_PROOFS)
def test_published_consistency_proofs(old_size: int, new_size: int, expected: list[bytes]) -> None:
    assert consistency_proof(old_size, LEAF_HASHES[:new_size]) == expected
    assert verify_consistency(old_size, new_size, ROOTS[old_size], ROOTS[new_size], expected)


def _corrupted_inclusion_claims(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> dict[str, tuple[bytes, int, int, list[bytes], bytes]]:
    claims = {
        "index - 1": (leaf, index - 1, size, proof, root),
        "index + 1": (leaf, index + 1, size, proof, root),
        "index ^ 2": (leaf, index ^ 2, size, proof, root),
        "size * 2": (leaf, index, size * 2, proof, root),
        "size // 2": (leaf, index, size // 2, proof, root),
        "wrong leaf": (leaf_hash(b"WrongLeaf"), index, size, proof, root),
        "flipped leaf": (_flip(leaf), index, size, proof, root),
        "empty-tree root": (leaf, index, size, proof, EMPTY_TREE_ROOT),
        "another root": (leaf, index, size, proof, SOME_HASH),
        "trailing garbage": (leaf, index, size, [*proof, b""], root),
        "trailing root": (leaf, index, size, [*proof, root], root),
        "preceding garbage": (leaf, index, size, [b"", *proof], root),
        "preceding root": (leaf, index, size, [root, *proof], root),
    }
    for position in range(len(proof)):
        flipped = [*proof]
        flipped[position] = _flip(flipped[position])
        claims[f"proof[{position}] flipped"] = (leaf, index, size, flipped, root)
    if proof:
        claims["last element removed"] = (leaf, index, size, proof[:-1], root)
    if len(proof) > 1:
        claims["element inserted"] = (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)
    return claims


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_published_inclusion_proofs_fail_when_corrupted(index: int, size: int, proof: list[bytes]) -> None:
    claims = _corrupted_inclusion_claims(LEAF_HASHES[index], index, size, proof, ROOTS[size])
    assert [name for name, claim in claims.items() if verify_inclusion(*claim)] == []


def _corrupted_consistency_claims(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> dict[str, tuple[int, int, bytes, bytes, list[bytes]]]:
    claims = {
        "old size - 1": (old_size - 1, new_size, old_root, new_root, proof),
        "old size + 1": (old_size + 1, new_size, old_root, new_root, proof),
        "old size ^ 2": (old_size ^ 2, new_size, old_root, new_root, proof),
        "new size * 2": (old_size, new_size * 2, old_root, new_root, proof),
        "new size // 2": (old_size, new_size // 2, old_root, new_root, proof),
        "wrong old root": (old_size, new_size, SOME_HASH, new_root, proof),
        "wrong new root": (old_size, new_size, old_root, SOME_HASH, proof),
        "swapped roots": (old_size, new_size, new_root, old_root, proof),
        "empty proof": (old_size, new_size, old_root, new_root, []),
        "trailing garbage": (old_size, new_size, old_root, new_root, [*proof, b""]),
        "trailing old root": (old_size, new_size, old_root, new_root, [*proof, old_root]),
        "trailing new root": (old_size, new_size, old_root, new_root, [*proof, new_root]),
        "preceding garbage": (old_size, new_size, old_root, new_root, [b"", *proof]),
        "preceding old root": (old_size, new_size, old_root, new_root, [old_root, *proof]),
        "preceding new root": (old_size, new_size, old_root, new_root, [new_root, *proof]),
        "preceding proof[0]": (old_size, new_size, old_root, new_root, [proof[0], *proof]),
        "truncated": (old_size, new_size, old_root, new_root, proof[:-1]),
    }
    for position in range(len(proof)):
        flipped = [*proof]
        flipped[position] = _flip(flipped[position], bit=16)
        claims[f"proof[{position}] flipped"] = (old_size, new_size, old_root, new_root, flipped)
    return claims


@pytest.mark.parametrize(("old_size", "new_size", "proof"), [vector for vector in CONSISTENCY_PROOFS if vector[2]])
def test_published_consistency_proofs_fail_when_corrupted(old_size: int, new_size: int, proof: list[bytes]) -> None:
    claims = _corrupted_consistency_claims(old_size, new_size, ROOTS[old_size], ROOTS[new_size], proof)
    assert [name for name, claim in claims.items() if verify_consistency(*claim)] == []


# --- edges and errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (1, 1), (2, 1), (-1, 4)])
def test_inclusion_in_a_tree_without_that_leaf_fails(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_TREE_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], SOME_HASH)


def test_inclusion_in_a_one_leaf_tree_is_the_leaf_itself() -> None:
    leaf = leaf_hash(b"data")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], b"")
    assert not verify_inclusion(b"", 0, 1, [], leaf)


def test_consistency_of_equal_and_empty_trees() -> None:
    root = ROOTS[3]
    assert verify_consistency(0, 0, EMPTY_TREE_ROOT, EMPTY_TREE_ROOT, [])
    assert verify_consistency(0, 3, EMPTY_TREE_ROOT, root, [])
    assert verify_consistency(3, 3, root, root, [])
    assert not verify_consistency(3, 3, root, ROOTS[4], [])  # same size, other root
    assert not verify_consistency(3, 3, root, root, [root])  # equal trees need no proof
    assert not verify_consistency(0, 3, EMPTY_TREE_ROOT, root, [root])
    assert not verify_consistency(0, 3, SOME_HASH, root, [])  # the empty tree has one root
    assert not verify_consistency(0, 0, EMPTY_TREE_ROOT, SOME_HASH, [])


@pytest.mark.parametrize(("old_size", "new_size"), [(1, 0), (2, 1), (-1, 2), (1, 2)])
def test_consistency_that_cannot_hold_fails(old_size: int, new_size: int) -> None:
    # Shrinking, negative, and (1, 2) with an empty proof.
    assert not verify_consistency(old_size, new_size, ROOTS[1], ROOTS[2], [])


def test_consistency_proof_of_equal_or_empty_trees_is_empty() -> None:
    assert consistency_proof(0, LEAF_HASHES) == []
    assert consistency_proof(8, LEAF_HASHES) == []
    assert consistency_proof(0, []) == []


@pytest.mark.parametrize(
    ("index", "size", "message"),
    [
        (8, 8, "leaf index 8 is not in a tree of 8 leaves (0 to 7)"),
        (-1, 8, "leaf index -1 is not in a tree of 8 leaves (0 to 7)"),
        (0, 0, "tree size 0: an inclusion proof needs a tree of at least one leaf"),
    ],
)
def test_inclusion_proof_names_a_bad_index(index: int, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        inclusion_proof(index, LEAF_HASHES[:size])


@pytest.mark.parametrize(
    ("old_size", "new_size", "message"),
    [
        (9, 8, "old size 9 is larger than new size 8: a log only grows"),
        (-1, 8, "tree sizes cannot be negative"),
    ],
)
def test_consistency_proof_names_a_bad_size(old_size: int, new_size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        consistency_proof(old_size, LEAF_HASHES[:new_size])
    with pytest.raises(ValueError, match=message):
        consistency_proof_ranges(old_size, new_size)


def test_range_roots_names_a_range_past_the_leaves() -> None:
    with pytest.raises(ValueError, match="the leaves end at 8, before the leaf range that ends at 9"):
        range_roots(LEAF_HASHES, [(0, 9)])
    with pytest.raises(ValueError, match=r"leaf range \[5, 3\) is not a range"):
        range_roots(LEAF_HASHES, [(5, 3)])


def test_range_roots_reads_no_further_than_needed() -> None:
    def leaves() -> Iterator[bytes]:
        yield from LEAF_HASHES[:4]
        raise AssertionError("read past the last range")

    assert range_roots(leaves(), [(0, 4), (1, 2), (2, 2)]) == [ROOTS[4], LEAF_HASHES[1], EMPTY_TREE_ROOT]


# --- properties against the RFC's recursive definitions --------------------------------------------------


def _split(size: int) -> int:
    k = 1
    while k * 2 < size:
        k *= 2
    return k


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 §2.1.1, over leaf hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def naive_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*naive_path(index, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(index - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(old_size: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 §2.1.4.1."""
    if old_size == len(leaves):
        return [] if whole else [naive_root(leaves)]
    k = _split(len(leaves))
    if old_size <= k:
        return [*naive_subproof(old_size, leaves[:k], whole), naive_root(leaves[k:])]
    return [*naive_subproof(old_size - k, leaves[k:], False), naive_root(leaves[:k])]


def _leaves(seed: bytes, size: int) -> list[bytes]:
    # Distinct leaves: a tree of equal leaves would let some wrong claims verify by coincidence.
    return [leaf_hash(seed + index.to_bytes(2, "big")) for index in range(size)]


seeds = st.binary(min_size=0, max_size=8)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, size=st.integers(0, 300))
def test_streaming_root_is_the_recursive_root(seed: bytes, size: int) -> None:
    leaves = _leaves(seed, size)
    assert root_from_leaf_hashes(iter(leaves)) == (size, naive_root(leaves))


@settings(max_examples=25, deadline=None)
@given(seed=seeds, size=st.integers(1, 300), data=st.data())
def test_every_inclusion_proof_verifies_and_corruptions_fail(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = _leaves(seed, size)
    root = naive_root(leaves)
    for index in range(size):
        assert verify_inclusion(leaves[index], index, size, inclusion_proof(index, leaves), root), index
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = inclusion_proof(index, leaves)
    assert proof == naive_path(index, leaves)
    assert len(inclusion_proof_ranges(index, size)) == len(proof)
    leaf = leaves[index]
    byte = data.draw(st.integers(0, 31), label="byte")
    bit = 1 << data.draw(st.integers(0, 7), label="bit")
    assert not verify_inclusion(_flip(leaf, byte, bit), index, size, proof, root)
    assert not verify_inclusion(leaf, index, size, proof, _flip(root, byte, bit))
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="position")
        flipped = [*proof]
        flipped[position] = _flip(flipped[position], byte, bit)
        assert not verify_inclusion(leaf, index, size, flipped, root)
    other_index = data.draw(st.integers(0, size).filter(lambda other: other != index), label="other index")
    assert not verify_inclusion(leaf, other_index, size, proof, root)
    # A wrong size against the true root of that size; and the reference implementations' size * 2 and
    # size // 2 against this root (other sizes with the same path shape would pass here: only the
    # root binds the size).
    other_size = data.draw(st.integers(index + 1, 301).filter(lambda other: other != size), label="other size")
    assert not verify_inclusion(leaf, index, other_size, proof, naive_root(_leaves(seed, other_size)))
    assert not verify_inclusion(leaf, index, size * 2, proof, root)
    assert not verify_inclusion(leaf, index, size // 2, proof, root)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, new_size=st.integers(1, 300), data=st.data())
def test_every_consistency_proof_verifies_and_corruptions_fail(seed: bytes, new_size: int, data: st.DataObject) -> None:
    leaves = _leaves(seed, new_size)
    roots = [root_from_leaf_hashes(leaves[:size])[1] for size in range(new_size + 1)]
    for old_size in range(1, new_size + 1):
        proof = consistency_proof(old_size, leaves)
        assert verify_consistency(old_size, new_size, roots[old_size], roots[new_size], proof), old_size
    old_size = data.draw(st.integers(1, new_size), label="old size")
    proof = consistency_proof(old_size, leaves)
    assert proof == naive_subproof(old_size, leaves, True)
    old_root, new_root = roots[old_size], roots[new_size]
    byte = data.draw(st.integers(0, 31), label="byte")
    bit = 1 << data.draw(st.integers(0, 7), label="bit")
    assert not verify_consistency(old_size, new_size, _flip(old_root, byte, bit), new_root, proof)
    assert not verify_consistency(old_size, new_size, old_root, _flip(new_root, byte, bit), proof)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="position")
        flipped = [*proof]
        flipped[position] = _flip(flipped[position], byte, bit)
        assert not verify_consistency(old_size, new_size, old_root, new_root, flipped)
    if proof:  # equal sizes have nothing to corrupt but the roots
        other_old = data.draw(st.integers(0, new_size).filter(lambda other: other != old_size), label="other old")
        assert not verify_consistency(other_old, new_size, roots[other_old], new_root, proof)
        assert not verify_consistency(old_size, new_size * 2, old_root, new_root, proof)
        assert not verify_consistency(old_size, new_size // 2, old_root, new_root, proof)
        other_new = data.draw(st.integers(old_size, 301).filter(lambda other: other != new_size), label="other size")
        other_new_root = naive_root(_leaves(seed, other_new))
        assert not verify_consistency(old_size, other_new, old_root, other_new_root, proof)


@settings(max_examples=40, deadline=None)
@given(seed=seeds, size=st.integers(0, 300), data=st.data())
def test_range_roots_are_the_roots_of_the_slices(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = _leaves(seed, size)
    bounds = st.integers(0, size)
    ranges = [tuple(sorted(pair)) for pair in data.draw(st.lists(st.tuples(bounds, bounds), max_size=6))]
    assert range_roots(iter(leaves), ranges) == [naive_root(leaves[start:end]) for start, end in ranges]
