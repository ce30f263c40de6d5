"""Payout Merkle trees, byte for byte in OpenZeppelin's ``StandardMerkleTree`` format.

Each leaf is one claim ``(uint256 index, address account, uint256 amount)``::

    leaf = keccak256(keccak256(abi.encode(index, account, amount)))
    node = keccak256(min(a, b) ++ max(a, b))        # "sorted pairs": no left/right bits

The tree is the layout of ``StandardMerkleTree.of(values, ["uint256", "address",
"uint256"])`` with the library's default options (https://github.com/OpenZeppelin/merkle-tree):
leaf hashes sorted ascending, then stored as a complete binary tree in one array, root first,
the smallest leaf last::

    nodes[0]                      root
    nodes[i]  = node(nodes[2i+1], nodes[2i+2])
    nodes[-1 - k]                 the k-th smallest leaf hash

A proof is the sibling of each node on the way from the leaf up to the root; it verifies with
OpenZeppelin's ``MerkleProof.verify`` (and our Vyper distributor) unchanged. Golden vectors
made with the npm library itself live in ``tests/data/merkle_vectors.json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_utils.address import is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak

from loraloop.errors import InvalidRequest

__all__ = [
    "LEAF_ENCODING",
    "UINT256_MAX",
    "Hash",
    "Leaf",
    "LeafLike",
    "MerkleTree",
    "leaf_hash",
    "node_hash",
    "process_proof",
    "verify",
]

#: The Solidity types of a leaf, as ``StandardMerkleTree.of`` is given them.
LEAF_ENCODING = ("uint256", "address", "uint256")
UINT256_MAX = 2**256 - 1

#: A 32-byte hash as bytes or ``0x``-prefixed hex (how proofs come back from JSON).
Hash = bytes | str

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
_MAX_LISTED = 20  # problems named in one error; the rest are counted


@dataclass(frozen=True, slots=True)
class Leaf:
    """One claim: ``account`` may claim ``amount`` (base units) under ``index``."""

    index: int
    """The claim's number in its epoch (a bit in the distributor's claimed bitmap)."""
    account: str
    """Who is paid; given checksummed or lower-case, kept EIP-55 checksummed."""
    amount: int
    """How much, in the token's smallest unit."""

    def __post_init__(self) -> None:
        problems = _leaf_problems(self.index, self.account, self.amount)
        if problems:
            raise InvalidRequest("; ".join(problems), code="invalid_merkle_leaf", param="leaf")
        object.__setattr__(self, "account", to_checksum_address(self.account))

    def encode(self) -> bytes:
        """``abi.encode(index, account, amount)``: three 32-byte words."""
        return abi_encode(LEAF_ENCODING, [self.index, self.account, self.amount])


#: What a leaf may be given as: a ``Leaf`` or an ``(index, account, amount)`` triple.
LeafLike = Leaf | tuple[int, str, int]


def leaf_hash(leaf: LeafLike) -> bytes:
    """The standard leaf hash: ``keccak256(keccak256(abi.encode(...)))``."""
    return keccak(keccak(_as_leaf(leaf).encode()))


def node_hash(a: bytes, b: bytes) -> bytes:
    """The parent of two nodes: the hash of the pair in ascending byte order."""
    return keccak(a + b if a <= b else b + a)


def process_proof(leaf: bytes, proof: Sequence[Hash]) -> bytes:
    """The root that ``proof`` leads to from the leaf hash ``leaf``."""
    node = _to_hash(leaf, "leaf hash")
    for step, sibling in enumerate(proof):
        node = node_hash(node, _to_hash(sibling, f"proof[{step}]"))
    return node


def verify(root: Hash, leaf: LeafLike, proof: Sequence[Hash]) -> bool:
    """Whether ``proof`` shows ``leaf`` is in the tree with ``root``.

    The same answer as ``StandardMerkleTree.verify`` and on-chain ``MerkleProof.verify``.
    Malformed hashes or leaf values raise ``InvalidRequest``; a wrong proof returns False.
    """
    return process_proof(leaf_hash(leaf), proof) == _to_hash(root, "root")


@dataclass(frozen=True)
class MerkleTree:
    """A built tree. Make one with ``MerkleTree.of(leaves)``; it is immutable."""

    leaves: tuple[Leaf, ...]
    """The leaves in the order they were given (not tree order)."""
    nodes: tuple[bytes, ...]
    """Every node in OpenZeppelin's array layout: root first, ``2 * len(leaves) - 1`` hashes."""
    positions: tuple[int, ...]
    """``leaves[i]`` hashes to ``nodes[positions[i]]`` (the dump's ``treeIndex``)."""
    _by_index: dict[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_index", {leaf.index: i for i, leaf in enumerate(self.leaves)})

    @classmethod
    def of(cls, leaves: Iterable[LeafLike]) -> MerkleTree:
        """Build the tree ``StandardMerkleTree.of`` builds for the same values.

        Every bad leaf and every repeated index is reported in one ``InvalidRequest``.
        """
        checked = _check_leaves(list(leaves))
        hashes = [leaf_hash(leaf) for leaf in checked]
        order = sorted(range(len(checked)), key=hashes.__getitem__)
        size = 2 * len(checked) - 1
        nodes: list[bytes] = [b""] * size
        positions = [0] * len(checked)
        for rank, value_index in enumerate(order):
            positions[value_index] = size - 1 - rank
            nodes[size - 1 - rank] = hashes[value_index]
        for i in range(size - 1 - len(checked), -1, -1):
            nodes[i] = node_hash(nodes[2 * i + 1], nodes[2 * i + 2])
        return cls(tuple(checked), tuple(nodes), tuple(positions))

    @classmethod
    def load(cls, dump: Mapping[str, Any]) -> MerkleTree:
        """Rebuild a tree from ``dump()`` output (or OpenZeppelin's), checking every node."""
        if dump.get("format") != "standard-v1" or tuple(dump.get("leafEncoding", ())) != (
            LEAF_ENCODING
        ):
            raise InvalidRequest(
                "a Merkle tree dump must have format 'standard-v1' and leafEncoding "
                f"{list(LEAF_ENCODING)}",
                code="invalid_merkle_dump",
                param="dump",
            )
        try:
            entries = list(dump["values"])
            leaves = [_parsed_leaf(entry["value"]) for entry in entries]
            stored_positions = tuple(int(entry["treeIndex"]) for entry in entries)
            stored = tuple(_to_hash(node, "tree node") for node in dump["tree"])
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidRequest(
                f"the Merkle tree dump is malformed ({error!r})",
                code="invalid_merkle_dump",
                param="dump",
            ) from None
        tree = cls.of(leaves)
        if stored != tree.nodes or stored_positions != tree.positions:
            raise InvalidRequest(
                "the Merkle tree dump does not match its values",
                code="invalid_merkle_dump",
                param="dump",
            )
        return tree

    @property
    def root(self) -> bytes:
        """The 32-byte root to publish on chain."""
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.leaves)

    def leaf(self, index: int) -> Leaf:
        """The leaf with claim index ``index``."""
        return self.leaves[self._value_index(index)]

    def proof(self, index: int) -> tuple[bytes, ...]:
        """The proof for the leaf with claim index ``index``, leaf-side sibling first."""
        position = self.positions[self._value_index(index)]
        proof = []
        while position > 0:
            proof.append(self.nodes[position + 1 if position % 2 else position - 1])
            position = (position - 1) // 2
        return tuple(proof)

    def dump(self) -> dict[str, Any]:
        """JSON-ready, in OpenZeppelin's ``standard-v1`` dump format (its ``load`` reads it)."""
        return {
            "format": "standard-v1",
            "leafEncoding": list(LEAF_ENCODING),
            "tree": ["0x" + node.hex() for node in self.nodes],
            "values": [
                {
                    "value": [str(leaf.index), leaf.account, str(leaf.amount)],
                    "treeIndex": position,
                }
                for leaf, position in zip(self.leaves, self.positions, strict=True)
            ],
        }

    def _value_index(self, index: int) -> int:
        try:
            return self._by_index[index]
        except KeyError:
            raise InvalidRequest(
                f"no leaf with index {index} in this Merkle tree",
                code="merkle_leaf_not_found",
                param="index",
            ) from None


def _check_leaves(given: list[LeafLike]) -> list[Leaf]:
    """Every given leaf as a ``Leaf``, or one error naming each problem."""
    problems: list[str] = []
    leaves: list[Leaf] = []
    first_seen: dict[int, int] = {}
    if not given:
        problems.append("a Merkle tree needs at least one leaf")
    for position, item in enumerate(given):
        try:
            leaf = _as_leaf(item)
        except InvalidRequest as error:
            problems.append(f"leaves[{position}]: {error.message}")
            continue
        if leaf.index in first_seen:
            problems.append(
                f"leaves[{position}]: index {leaf.index} is already used by "
                f"leaves[{first_seen[leaf.index]}]; each index may appear once"
            )
        else:
            first_seen[leaf.index] = position
        leaves.append(leaf)
    if problems:
        listed = problems[:_MAX_LISTED]
        if len(problems) > _MAX_LISTED:
            listed.append(f"and {len(problems) - _MAX_LISTED} more problems")
        raise InvalidRequest("; ".join(listed), code="invalid_merkle_leaf", param="leaves")
    return leaves


def _as_leaf(item: LeafLike) -> Leaf:
    if isinstance(item, Leaf):
        return item
    if not isinstance(item, tuple | list) or len(item) != 3:
        raise InvalidRequest(
            f"a leaf must be a Leaf or an (index, account, amount) triple, not {item!r}",
            code="invalid_merkle_leaf",
            param="leaf",
        )
    return Leaf(*item)


def _parsed_leaf(value: Sequence[Any]) -> LeafLike:
    """A dumped ``[index, account, amount]``; uint256s as numbers, decimal or 0x-hex strings."""
    index, account, amount = value
    return (_parsed_uint(index), account, _parsed_uint(amount))


def _parsed_uint(value: object) -> Any:
    if isinstance(value, str):
        return int(value, 16) if value.startswith(("0x", "0X")) else int(value, 10)
    return value


def _leaf_problems(index: object, account: object, amount: object) -> list[str]:
    problems = (
        _uint256_problem("index", index),
        _address_problem(account),
        _uint256_problem("amount", amount),
    )
    return [problem for problem in problems if problem is not None]


def _uint256_problem(name: str, value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"{name} {value!r} must be an integer (uint256)"
    if not 0 <= value <= UINT256_MAX:
        return f"{name} {value} must be 0 to 2**256 - 1 (uint256)"
    return None


def _address_problem(account: object) -> str | None:
    if not isinstance(account, str) or not _ADDRESS.fullmatch(account):
        return f"account {account!r} must be 0x followed by 40 hex digits"
    if account != account.lower() and not is_checksum_address(account):
        return f"account {account!r} fails its EIP-55 checksum (give it checksummed or lower-case)"
    return None


def _to_hash(value: object, name: str) -> bytes:
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if isinstance(value, str) and _HEX_HASH.fullmatch(value):
        return bytes.fromhex(value[2:])
    raise InvalidRequest(
        f"{name} {value!r} must be 32 bytes or 0x followed by 64 hex digits",
        code="invalid_merkle_hash",
        param=name,
    )
