# pragma version ~=0.4.3
"""
@title loraloop RewardToken
@notice An ERC-20 token whose owner (the platform's account) mints rewards, up to an optional
        cap (0: no cap). Our own code; no library.
"""

from ethereum.ercs import IERC20

implements: IERC20


event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256


event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256


event OwnershipTransferred:
    previous_owner: indexed(address)
    new_owner: indexed(address)


name: public(String[64])
symbol: public(String[32])
decimals: public(constant(uint8)) = 18
totalSupply: public(uint256)
cap: public(uint256)
owner: public(address)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])


@deploy
def __init__(name_: String[64], symbol_: String[32], cap_: uint256):
    self.name = name_
    self.symbol = symbol_
    self.cap = cap_
    self.owner = msg.sender
    log OwnershipTransferred(previous_owner=empty(address), new_owner=msg.sender)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "RewardToken: allowance too low"
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(receiver: address, amount: uint256):
    assert msg.sender == self.owner, "RewardToken: only the owner mints"
    assert receiver != empty(address), "RewardToken: mint to the zero address"
    supply: uint256 = self.totalSupply + amount
    assert self.cap == 0 or supply <= self.cap, "RewardToken: cap exceeded"
    self.totalSupply = supply
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)


@external
def transfer_ownership(new_owner: address):
    assert msg.sender == self.owner, "RewardToken: only the owner"
    assert new_owner != empty(address), "RewardToken: owner is the zero address"
    log OwnershipTransferred(previous_owner=self.owner, new_owner=new_owner)
    self.owner = new_owner


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "RewardToken: transfer to the zero address"
    assert self.balanceOf[sender] >= amount, "RewardToken: balance too low"
    self.balanceOf[sender] -= amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)
