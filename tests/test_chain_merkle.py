"""Merkle payout trees match OpenZeppelin's StandardMerkleTree byte for byte.

The golden vectors in ``tests/data/merkle_vectors.json`` were written by the npm library itself
(``scripts/merkle-vectors``); the property tests cover trees the vectors do not.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import is_checksum_address, to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraloop.chain import merkle
from loraloop.chain.merkle import UINT256_MAX, Leaf, MerkleTree, leaf_hash, verify
from loraloop.errors import InvalidRequest

VECTORS_FILE = Path(__file__).parent / "data" / "merkle_vectors.json"
DOCUMENT = json.loads(VECTORS_FILE.read_text())
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]
PROMISED_SIZES = {1, 2, 3, 4, 5, 7, 8, 16, 31, 33, 64, 100, 129}

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CHECKSUMMED = to_checksum_address("0x" + "5a" * 10 + "e3" * 10)


def _values(vector: dict[str, Any]) -> list[tuple[int, str, int]]:
    return [(int(index), account, int(amount)) for index, account, amount in vector["values"]]


def _hex(hashes: tuple[bytes, ...]) -> list[str]:
    return ["0x" + h.hex() for h in hashes]


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


def by_name(vectors: list[dict[str, Any]]) -> Any:
    return pytest.mark.parametrize("vector", vectors, ids=[v["name"] for v in vectors])


# --- golden vectors ----------------------------------------------------------------------------


def test_vectors_cover_what_was_promised() -> None:
    assert DOCUMENT["generator"].startswith("@openzeppelin/merkle-tree@")
    assert DOCUMENT["leaf_encoding"] == list(merkle.LEAF_ENCODING)
    sizes = {len(v["values"]) for v in VECTORS}
    assert sizes >= PROMISED_SIZES
    leaves = [leaf for v in VECTORS for leaf in _values(v)]
    amounts = {amount for _, _, amount in leaves}
    assert {0, UINT256_MAX} <= amounts
    assert UINT256_MAX in {index for index, _, _ in leaves}
    scattered = [v for v in VECTORS if v["name"].startswith("scattered-")]
    assert any(_values(v)[0][0] != 0 for v in scattered)
    assert any(len({a for _, a, _ in _values(v)}) < len(v["values"]) for v in VECTORS)


@by_name(VECTORS)
def test_tree_is_the_library_tree(vector: dict[str, Any]) -> None:
    tree = MerkleTree.of(_values(vector))
    assert "0x" + tree.root.hex() == vector["root"]
    assert _hex(tree.nodes) == vector["tree"]
    assert list(tree.positions) == vector["tree_indexes"]


@by_name(VECTORS)
def test_every_proof_is_the_library_proof_and_verifies(vector: dict[str, Any]) -> None:
    tree = MerkleTree.of(_values(vector))
    for value, expected in zip(_values(vector), vector["proofs"], strict=True):
        proof = tree.proof(value[0])
        assert _hex(proof) == expected
        assert verify(tree.root, value, proof)
        assert verify(vector["root"], value, expected)  # hex in, as read back from storage


@by_name(VECTORS)
def test_a_tampered_claim_does_not_verify(vector: dict[str, Any]) -> None:
    tree = MerkleTree.of(_values(vector))
    used = {index for index, _, _ in _values(vector)}
    for index, account, amount in _values(vector):
        proof = tree.proof(index)
        other_amount = amount - 1 if amount else 1
        other_index = next(
            i for i in (index + 1, index - 1, 2**255) if 0 <= i <= UINT256_MAX and i not in used
        )
        assert not verify(tree.root, (index, account, other_amount), proof)
        assert not verify(tree.root, (index, BOB if account != BOB else ALICE, amount), proof)
        assert not verify(tree.root, (other_index, account, amount), proof)
        assert not verify(tree.root, (index, account, amount), (*proof, tree.root))
        for step in range(len(proof)):
            wrong = (*proof[:step], _flip(proof[step]), *proof[step + 1 :])
            assert not verify(tree.root, (index, account, amount), wrong)
        if proof:
            assert not verify(tree.root, (index, account, amount), proof[:-1])
            assert not verify(_flip(tree.root), (index, account, amount), proof)


@by_name(VECTORS[:8])
def test_checksummed_input_gives_the_same_tree(vector: dict[str, Any]) -> None:
    lower = MerkleTree.of(_values(vector))
    mixed = MerkleTree.of([(i, to_checksum_address(a), m) for i, a, m in _values(vector)])
    assert mixed.nodes == lower.nodes
    assert all(is_checksum_address(leaf.account) for leaf in lower.leaves)


@by_name([v for v in VECTORS if len(v["values"]) in (5, 33)])
def test_input_order_moves_positions_not_nodes(vector: dict[str, Any]) -> None:
    values = _values(vector)
    shuffled = values[:]
    random.Random(7).shuffle(shuffled)
    tree, again = MerkleTree.of(values), MerkleTree.of(shuffled)
    assert again.nodes == tree.nodes
    for index, _, _ in values:
        assert again.proof(index) == tree.proof(index)
    assert [leaf.index for leaf in again.leaves] == [index for index, _, _ in shuffled]


@by_name([v for v in VECTORS if len(v["values"]) in (1, 7, 100)])
def test_dump_is_the_library_format_and_loads_back(vector: dict[str, Any]) -> None:
    tree = MerkleTree.of(_values(vector))
    dump = json.loads(json.dumps(tree.dump()))
    assert dump["format"] == "standard-v1"
    assert dump["tree"] == vector["tree"]
    assert [entry["treeIndex"] for entry in dump["values"]] == vector["tree_indexes"]
    assert [
        [entry["value"][0], entry["value"][1].lower(), entry["value"][2]]
        for entry in dump["values"]
    ] == vector["values"]
    assert MerkleTree.load(dump) == tree
    library_dump = {  # what StandardMerkleTree.dump() writes for the same inputs
        "format": "standard-v1",
        "leafEncoding": list(merkle.LEAF_ENCODING),
        "tree": vector["tree"],
        "values": [
            {"value": value, "treeIndex": position}
            for value, position in zip(vector["values"], vector["tree_indexes"], strict=True)
        ],
    }
    assert MerkleTree.load(library_dump).root == tree.root


def test_a_dump_that_does_not_match_its_values_is_refused() -> None:
    dump = MerkleTree.of(_values(VECTORS[4])).dump()
    dump["values"][0]["value"][2] = str(int(dump["values"][0]["value"][2]) + 1)
    with pytest.raises(InvalidRequest, match="does not match its values"):
        MerkleTree.load(dump)
    with pytest.raises(InvalidRequest, match="standard-v1"):
        MerkleTree.load({**dump, "format": "simple-v1"})
    with pytest.raises(InvalidRequest, match="malformed"):
        MerkleTree.load({**dump, "values": [{"value": ["x", ALICE, "1"], "treeIndex": 0}]})


# --- properties --------------------------------------------------------------------------------

uint256 = st.one_of(st.integers(0, UINT256_MAX), st.sampled_from([0, 1, UINT256_MAX]))
address = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
leaf_lists = st.lists(
    st.tuples(uint256, address, uint256), min_size=1, max_size=60, unique_by=lambda t: t[0]
)
# No deadline: the machine running CI is shared, and hashing 60 leaves is slow there.
PROPERTY = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(leaf_lists)
def test_every_leaf_of_any_tree_verifies(values: list[tuple[int, str, int]]) -> None:
    tree = MerkleTree.of(values)
    depth = (2 * len(values) - 1).bit_length() - 1
    assert len(tree.nodes) == 2 * len(values) - 1
    for value in values:
        proof = tree.proof(value[0])
        assert len(proof) in (depth - 1, depth)
        assert verify(tree.root, value, proof)
        assert tree.nodes[tree.positions[tree.leaves.index(Leaf(*value))]] == leaf_hash(value)


TAMPERINGS = ["amount", "account", "index", "sibling", "other leaf's proof"]


@PROPERTY
@given(leaf_lists, st.data())
def test_a_tampered_leaf_of_any_tree_does_not_verify(
    values: list[tuple[int, str, int]], data: st.DataObject
) -> None:
    tree = MerkleTree.of(values)
    index, account, amount = data.draw(st.sampled_from(values))
    proof = tree.proof(index)
    kind = data.draw(st.sampled_from(TAMPERINGS))
    claim = (index, account, amount)
    if kind == "amount":
        claim = (index, account, data.draw(uint256.filter(lambda m: m != amount)))
    elif kind == "account":
        claim = (index, data.draw(address.filter(lambda a: a != account)), amount)
    elif kind == "index":
        claim = (data.draw(uint256.filter(lambda i: i != index)), account, amount)
    elif kind == "sibling" and proof:
        step = data.draw(st.integers(0, len(proof) - 1))
        proof = (*proof[:step], data.draw(st.binary(min_size=32, max_size=32)), *proof[step + 1 :])
    elif kind == "other leaf's proof" and len(values) > 1:
        other = data.draw(st.sampled_from([v for v in values if v[0] != index]))
        proof = tree.proof(other[0])
    else:
        proof = (*proof, data.draw(st.binary(min_size=32, max_size=32)))
    assert proof != tree.proof(index) or claim != (index, account, amount)
    assert not verify(tree.root, claim, proof)


@PROPERTY
@given(leaf_lists, st.randoms(use_true_random=False))
def test_the_root_does_not_depend_on_input_order(
    values: list[tuple[int, str, int]], rng: random.Random
) -> None:
    shuffled = values[:]
    rng.shuffle(shuffled)
    assert MerkleTree.of(shuffled).root == MerkleTree.of(values).root


# --- bad input ---------------------------------------------------------------------------------

BAD_CASES: list[tuple[str, list[Any], str]] = [
    ("no leaves", [], "at least one leaf"),
    ("duplicate index", [(3, ALICE, 1), (4, BOB, 2), (3, BOB, 5)], "index 3 is already used by"),
    ("negative index", [(-1, ALICE, 1)], "index -1 must be 0 to 2**256 - 1"),
    ("index too large", [(2**256, ALICE, 1)], f"index {2**256} must be 0 to 2**256 - 1"),
    ("negative amount", [(0, ALICE, -5)], "amount -5 must be 0 to 2**256 - 1"),
    ("amount too large", [(0, ALICE, 2**256)], "must be 0 to 2**256 - 1"),
    ("bool amount", [(0, ALICE, True)], "amount True must be an integer"),
    ("string amount", [(0, ALICE, "5")], "amount '5' must be an integer"),
    ("float index", [(1.0, ALICE, 5)], "index 1.0 must be an integer"),
    ("no 0x", [(0, ALICE[2:] + "00", 1)], "must be 0x followed by 40 hex digits"),
    ("short address", [(0, ALICE[:-2], 1)], "must be 0x followed by 40 hex digits"),
    ("non-hex address", [(0, "0x" + "zz" * 20, 1)], "must be 0x followed by 40 hex digits"),
    ("bytes address", [(0, bytes(20), 1)], "must be 0x followed by 40 hex digits"),
    ("no address", [(0, None, 1)], "account None must be 0x"),
    ("bad checksum", [(0, CHECKSUMMED.swapcase().replace("0X", "0x"), 1)], "EIP-55 checksum"),
    ("upper case", [(0, "0x" + CHECKSUMMED[2:].upper(), 1)], "EIP-55 checksum"),
    ("not a triple", [(0, ALICE)], "(index, account, amount) triple"),
]


@pytest.mark.parametrize(
    ("leaves", "message"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_leaves_are_refused_by_name(leaves: list[Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        MerkleTree.of(leaves)
    assert message in caught.value.message
    assert caught.value.code == "invalid_merkle_leaf"


def test_the_checksum_cases_are_really_bad() -> None:
    assert is_checksum_address(CHECKSUMMED)
    assert any(c.isupper() for c in CHECKSUMMED)
    for case in ("bad checksum", "upper case"):
        account = next(c[1][0][1] for c in BAD_CASES if c[0] == case)
        assert account != account.lower()
        assert not is_checksum_address(account)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(InvalidRequest) as caught:
        MerkleTree.of([(0, ALICE, 1), (1, "nope", -1), (0, BOB, 2), (2, BOB, 2**256)])
    message = caught.value.message
    for part in (
        "leaves[1]: account 'nope' must be 0x",
        "amount -1 must be 0 to",
        "leaves[2]: index 0 is already used by leaves[0]",
        f"leaves[3]: amount {2**256} must be",
    ):
        assert part in message
    with pytest.raises(InvalidRequest, match="and 5 more problems"):
        MerkleTree.of([(-i - 1, ALICE, 0) for i in range(25)])


def test_a_leaf_checks_itself_and_keeps_a_checksummed_account() -> None:
    assert Leaf(1, CHECKSUMMED.lower(), 2).account == CHECKSUMMED
    assert Leaf(1, CHECKSUMMED, 2) == Leaf(1, CHECKSUMMED.lower(), 2)
    with pytest.raises(InvalidRequest, match="index -1") as caught:
        Leaf(-1, ALICE, 0)
    assert caught.value.code == "invalid_merkle_leaf"


def test_lookups_and_hashes_name_what_is_wrong() -> None:
    tree = MerkleTree.of([(0, ALICE, 1), (1, BOB, 2)])
    assert tree.leaf(1) == Leaf(1, BOB, 2)
    assert len(tree) == 2
    with pytest.raises(InvalidRequest, match="no leaf with index 9") as caught:
        tree.proof(9)
    assert caught.value.code == "merkle_leaf_not_found"
    proof = tree.proof(0)
    with pytest.raises(InvalidRequest, match=r"proof\[0\]") as caught:
        verify(tree.root, (0, ALICE, 1), [proof[0][:31]])
    assert caught.value.code == "invalid_merkle_hash"
    with pytest.raises(InvalidRequest, match="root"):
        verify("0x1234", (0, ALICE, 1), proof)
    with pytest.raises(InvalidRequest, match="account"):
        verify(tree.root, (0, "0x12", 1), proof)


def test_public_names() -> None:
    assert set(merkle.__all__) == {
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
    }
