"""RFC 6962 / RFC 9162 Merkle trees: tree heads, inclusion and consistency proofs, and their checks.

Pure: bytes in, bytes out; no database, no clock. ``tracker.store.merkle_log`` builds the tree over the
event log with it.

Theory of operation. The tree over ``n`` leaves (RFC 9162 §2.1.1) is

    MTH({})       = SHA-256()                                    (the empty tree)
    MTH({d0})     = leaf_hash(d0)      = SHA-256(0x00 || d0)
    MTH(D[0:n])   = node_hash(MTH(D[0:k]), MTH(D[k:n]))           k: the largest power of two < n
                  = SHA-256(0x01 || left || right)

The 0x00 / 0x01 prefixes keep a leaf from ever passing for an inner node (second preimages). Because the
split is always at a power of two, the left part of every node is a *perfect* subtree, and a tree of
``n`` leaves is the right-leaning fold of the perfect subtrees whose sizes are the binary digits of
``n`` (13 = 8 + 4 + 1: ``node(P8, node(P4, P1))``). :class:`TreeAccumulator` keeps just those subtree
roots, a stack of at most ``log2(n) + 1`` hashes: appending a leaf pushes it, then merges the two top
entries while they have equal size (as many times as the new count has trailing zero bits).

Every proof is a list of roots of subtrees ``D[start:end]``: which ranges (``inclusion_proof_ranges``,
``consistency_proof_ranges``) depends on the sizes alone, so a caller holding the leaves in a stream
(the database) hashes all of them in one pass with :func:`range_roots`, in O(log n) memory.

- An inclusion proof of leaf ``m`` in ``D[0:n]`` (PATH, §2.1.3.1) is the sibling of every node on the
  way from the leaf up to the root, lowest first. The verifier (§2.1.3.2) walks up again: the bits of
  ``m`` and ``n - 1`` say at each step whether the sibling sits left or right, and where the rightmost
  spine skips a level.
- A consistency proof from size ``m`` to size ``n`` (PROOF via SUBPROOF, §2.1.4.1) holds the subtree
  roots from which both the old root and the new root can be rebuilt; the verifier (§2.1.4.2) rebuilds
  both at once, so the old tree is shown to be a prefix of the new one (the log only grew).

Producers raise ``ValueError`` naming the bad index or size. Verifiers never raise for a claim that
cannot hold (an index past the end, a size that shrinks, a hash that is not 32 bytes): they return False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from itertools import islice

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Leaves handed on at once between range boundaries by range_roots: big enough that the per-chunk cost
# vanishes, small enough to keep memory flat.
_CHUNK = 4096


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


class TreeAccumulator:
    """The root of a growing list of leaf hashes, kept as the roots of its perfect subtrees."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []  # perfect subtree roots, largest (leftmost) first
        self.size = 0

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order."""
        sha256 = hashlib.sha256
        stack = self._stack
        size = self.size
        for node in leaf_hashes:
            size += 1
            # Each trailing zero bit of the new size is one pair of equal perfect subtrees to merge.
            carry = size
            while not carry & 1:
                node = sha256(_NODE_PREFIX + stack.pop() + node).digest()
                carry >>= 1
            stack.append(node)
        self.size = size

    def root(self) -> bytes:
        """MTH of the leaves so far (the empty tree's root when there are none)."""
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            root = node_hash(left, root)
        return root


def root_from_leaf_hashes(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    """(number of leaves, MTH) of a stream of leaf hashes, in O(log n) memory."""
    tree = TreeAccumulator()
    tree.extend(leaf_hashes)
    return tree.size, tree.root()


def range_roots(leaf_hashes: Iterable[bytes], ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTH of ``leaf_hashes[start:end]`` for each ``(start, end)`` of ``ranges``, in one pass.

    Ranges may overlap (the whole tree and the proof's subtrees, say); the stream is read only up to the
    last range's end. An empty range gives the empty tree's root.
    """
    for start, end in ranges:
        if not 0 <= start <= end:
            raise ValueError(f"leaf range [{start}, {end}) is not a range of leaf indices")
    trees = [TreeAccumulator() for _ in ranges]
    boundaries = sorted({bound for bounds in ranges for bound in bounds})
    leaves = iter(leaf_hashes)
    position = 0
    for boundary in boundaries:
        # Between two boundaries the same ranges are open: hand them the same chunks.
        open_trees = [tree for tree, (start, end) in zip(trees, ranges, strict=True) if start <= position < end]
        while position < boundary:
            chunk = list(islice(leaves, min(_CHUNK, boundary - position)))
            if not chunk:
                raise ValueError(f"the leaves end at {position}, before the leaf range that ends at {boundaries[-1]}")
            for tree in open_trees:
                tree.extend(chunk)
            position += len(chunk)
    return [tree.root() for tree in trees]


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (``size`` >= 2): where MTH splits."""
    return 1 << ((size - 1).bit_length() - 1)


def inclusion_proof_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make PATH(index, D[0:tree_size]), lowest sibling first."""
    if tree_size < 1:
        raise ValueError(f"tree size {tree_size}: an inclusion proof needs a tree of at least one leaf")
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is not in a tree of {tree_size} leaves (0 to {tree_size - 1})")
    siblings: list[tuple[int, int]] = []
    start, end = 0, tree_size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            siblings.append((middle, end))
            end = middle
        else:
            siblings.append((start, middle))
            start = middle
    siblings.reverse()
    return siblings


def consistency_proof_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make PROOF(old_size, D[0:new_size]), in the proof's order.

    Empty when the sizes are equal or the old tree is empty: there is nothing to prove.
    """
    if old_size < 0 or new_size < 0:
        raise ValueError(f"tree sizes cannot be negative (old size {old_size}, new size {new_size})")
    if old_size > new_size:
        raise ValueError(f"old size {old_size} is larger than new size {new_size}: a log only grows")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[start:end], whole): descend from the root, collecting the outer parts first.
    ranges: list[tuple[int, int]] = []
    start, end, old_part, whole = 0, new_size, old_size, True
    while old_part < end - start:
        middle = start + _split(end - start)
        if old_part <= middle - start:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            old_part -= middle - start
            start = middle
            whole = False
    # The old tree's own root is left out only when it is the root of the whole old tree: the verifier
    # has that already.
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[0:n]) over all of ``leaf_hashes``: the audit path of leaf ``index``, lowest first."""
    return range_roots(leaf_hashes, inclusion_proof_ranges(index, len(leaf_hashes)))


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(old_size, D[0:n]) over all of ``leaf_hashes``: the tree of ``old_size`` is its prefix."""
    return range_roots(leaf_hashes, consistency_proof_ranges(old_size, len(leaf_hashes)))


def _hashes_well_formed(*hashes: bytes) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in hashes)


def verify_inclusion(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` shows that ``leaf_hash`` is leaf ``index`` of the tree of ``tree_size`` with ``root``.

    RFC 9162 §2.1.3.2. Binds the index and the root; the size is bound only as far as the shape of the
    path goes, which is why a tree head always signs the size together with the root.
    """
    if not 0 <= index < tree_size or not _hashes_well_formed(leaf_hash, root, *proof):
        return False
    fn, sn = index, tree_size - 1
    computed = leaf_hash
    for sibling in proof:
        if sn == 0:  # more path than tree
            return False
        if fn & 1 or fn == sn:
            computed = node_hash(sibling, computed)
            # On the right spine a node without a right sibling is its own parent: skip those levels.
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            computed = node_hash(computed, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and computed == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True when ``proof`` shows that the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. Equal sizes need an empty proof and equal roots;
    the empty tree (root SHA-256 of nothing) is a prefix of every tree, with an empty proof.
    """
    if not 0 <= old_size <= new_size or not _hashes_well_formed(old_root, new_root, *proof):
        return False
    if old_size == 0:
        return not proof and old_root == EMPTY_ROOT and (new_size > 0 or new_root == EMPTY_ROOT)
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # A power of two: the old tree is a perfect subtree of the new one, and its root starts the path.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    old_computed = new_computed = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_computed = node_hash(node, old_computed)
            new_computed = node_hash(node, new_computed)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            new_computed = node_hash(new_computed, node)
        fn >>= 1
        sn >>= 1
    return sn == 0 and old_computed == old_root and new_computed == new_root
