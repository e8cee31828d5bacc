// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title Trusted Pods test token (TPT)
/// @notice FOR DEVNETS AND TESTS ONLY. Anyone can mint any amount through `faucet`, so this token
/// is worthless by construction; never deploy it where real value is at stake.
contract TestToken is ERC20 {
    /// @notice The most one `faucet` call mints (18 decimals).
    uint256 public constant FAUCET_LIMIT = 1_000_000 ether;

    error FaucetLimit(uint256 amount, uint256 limit);

    constructor() ERC20("Trusted Pods Test Token", "TPT") {}

    /// @notice Mints `amount` to `to`, up to `FAUCET_LIMIT` per call. Anyone may call it.
    function faucet(address to, uint256 amount) external {
        if (amount > FAUCET_LIMIT) revert FaucetLimit(amount, FAUCET_LIMIT);
        _mint(to, amount);
    }
}
