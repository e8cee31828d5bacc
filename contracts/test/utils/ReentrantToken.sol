// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice A malicious ERC-20: when armed, every transfer or transferFrom first (or afterwards)
/// calls `target` with an arbitrary payload, as the token, and swallows the outcome so the
/// outer operation goes on. Tests arm it with calls back into Payment (deposit, a replayed
/// claim, withdrawUnlocked, close, create) and read the counters to see how re-entry ended.
contract ReentrantToken is ERC20 {
    /// ReentrancyGuardTransient's error (OpenZeppelin 5.x).
    bytes4 public constant GUARD_ERROR = bytes4(keccak256("ReentrancyGuardReentrantCall()"));

    address public target;
    bytes public payload;
    bool public afterMove;

    uint256 public attempts;
    uint256 public succeeded;
    uint256 public refusedByGuard;
    bytes public lastRevert;

    constructor() ERC20("Reentrant Token", "EVIL") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// Re-enters `target_` with `payload_` on the next transfer (once); `afterMove_` picks whether
    /// the re-entry happens before or after the balances move.
    function arm(address target_, bytes calldata payload_, bool afterMove_) external {
        target = target_;
        payload = payload_;
        afterMove = afterMove_;
    }

    function disarm() external {
        target = address(0);
        delete payload;
    }

    function _update(address from, address to, uint256 value) internal override {
        bool hook = target != address(0) && from != address(0) && to != address(0);
        if (hook && !afterMove) _reenter();
        super._update(from, to, value);
        if (hook && afterMove) _reenter();
    }

    function _reenter() private {
        address t = target;
        bytes memory data = payload;
        target = address(0); // once per arming, and never recursively
        attempts++;
        (bool ok, bytes memory ret) = t.call(data);
        if (ok) {
            succeeded++;
        } else {
            lastRevert = ret;
            // forge-lint: disable-next-line(unsafe-typecast) -- the selector: the first 4 bytes
            if (ret.length >= 4 && bytes4(ret) == GUARD_ERROR) refusedByGuard++;
        }
    }
}
