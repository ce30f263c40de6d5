# pragma version ~=0.4.3
"""
@title loraloop MerkleDistributor
@notice Pays each epoch's rewards from one Merkle root per epoch. Leaves are OpenZeppelin's
        StandardMerkleTree format for (uint256 index, address account, uint256 amount):
        keccak256(keccak256(abi.encode(index, account, amount))), pairs hashed sorted.
        `claim` pays `account` whoever sends it, so a claim can be relayed (gasless for the
        claimant). A claimed bitmap per epoch stops a second claim. `outstanding` is what
        published roots still owe; a root is only published when the distributor holds it
        and the new total, so funding can be topped up idempotently before publishing.
        Our own code; no library.
"""

from ethereum.ercs import IERC20


event RootPublished:
    epoch: indexed(uint256)
    root: bytes32
    total: uint256


event Claimed:
    epoch: indexed(uint256)
    index: uint256
    account: indexed(address)
    amount: uint256


MAX_PROOF: constant(uint256) = 64

token: public(immutable(IERC20))
owner: public(address)
roots: public(HashMap[uint256, bytes32])
totals: public(HashMap[uint256, uint256])
outstanding: public(uint256)
claimed_words: HashMap[uint256, HashMap[uint256, uint256]]


@deploy
def __init__(token_: IERC20):
    token = token_
    self.owner = msg.sender


@external
def publish(epoch: uint256, root: bytes32, total: uint256):
    assert msg.sender == self.owner, "MerkleDistributor: only the owner publishes"
    assert root != empty(bytes32), "MerkleDistributor: empty root"
    assert self.roots[epoch] == empty(bytes32), "MerkleDistributor: epoch already published"
    assert staticcall token.balanceOf(self) >= self.outstanding + total, "MerkleDistributor: underfunded"
    self.roots[epoch] = root
    self.totals[epoch] = total
    self.outstanding += total
    log RootPublished(epoch=epoch, root=root, total=total)


@view
@external
def is_claimed(epoch: uint256, index: uint256) -> bool:
    return self._is_claimed(epoch, index)


@external
def claim(
    epoch: uint256,
    index: uint256,
    account: address,
    amount: uint256,
    proof: DynArray[bytes32, MAX_PROOF],
):
    root: bytes32 = self.roots[epoch]
    assert root != empty(bytes32), "MerkleDistributor: no root for this epoch"
    assert not self._is_claimed(epoch, index), "MerkleDistributor: already claimed"
    leaf: bytes32 = keccak256(keccak256(abi_encode(index, account, amount)))
    assert self._verify(proof, root, leaf), "MerkleDistributor: invalid proof"
    word: uint256 = index // 256
    self.claimed_words[epoch][word] = self.claimed_words[epoch][word] | (1 << (index % 256))
    self.outstanding -= amount
    assert extcall token.transfer(account, amount), "MerkleDistributor: transfer failed"
    log Claimed(epoch=epoch, index=index, account=account, amount=amount)


@view
@internal
def _is_claimed(epoch: uint256, index: uint256) -> bool:
    return (self.claimed_words[epoch][index // 256] >> (index % 256)) & 1 == 1


@pure
@internal
def _verify(proof: DynArray[bytes32, MAX_PROOF], root: bytes32, leaf: bytes32) -> bool:
    computed: bytes32 = leaf
    for sibling: bytes32 in proof:
        if convert(computed, uint256) < convert(sibling, uint256):
            computed = keccak256(concat(computed, sibling))
        else:
            computed = keccak256(concat(sibling, computed))
    return computed == root
