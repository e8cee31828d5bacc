// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {TestToken} from "../src/TestToken.sol";
import {TestBase} from "./utils/TestBase.sol";

contract TestTokenTest is TestBase {
    TestToken internal token;
    address internal constant ALICE = address(0xA11CE);
    address internal constant BOB = address(0xB0B);
    uint256 internal constant LIMIT = 1_000_000 ether;

    function setUp() public {
        token = new TestToken();
    }

    function test_metadata() public view {
        vm.assertEq(bytes(token.name()), bytes("Trusted Pods Test Token"), "name");
        vm.assertEq(bytes(token.symbol()), bytes("TPT"), "symbol");
        assertEq(token.decimals(), 18, "decimals");
        assertEq(token.totalSupply(), 0, "totalSupply");
        assertEq(token.FAUCET_LIMIT(), LIMIT, "FAUCET_LIMIT");
    }

    function test_faucet_mintsToAnyoneFromAnyone() public {
        vm.expectEmit(true, true, true, true, address(token));
        emit IERC20.Transfer(address(0), BOB, 5 ether);
        vm.prank(ALICE);
        token.faucet(BOB, 5 ether);
        assertEq(token.balanceOf(BOB), 5 ether, "bob");
        assertEq(token.balanceOf(ALICE), 0, "alice");
        assertEq(token.totalSupply(), 5 ether, "totalSupply");
    }

    function test_faucet_acceptsTheLimitAndRepeats() public {
        token.faucet(ALICE, LIMIT);
        token.faucet(ALICE, LIMIT);
        assertEq(token.balanceOf(ALICE), 2 * LIMIT, "limit per call, not per account");
        assertEq(token.totalSupply(), 2 * LIMIT, "totalSupply");
    }

    function test_faucet_zeroAmountMintsNothing() public {
        vm.expectEmit(true, true, true, true, address(token));
        emit IERC20.Transfer(address(0), ALICE, 0);
        token.faucet(ALICE, 0);
        assertEq(token.totalSupply(), 0, "totalSupply");
    }

    function test_faucet_revertsAboveTheLimit() public {
        vm.expectRevert(abi.encodeWithSelector(TestToken.FaucetLimit.selector, LIMIT + 1, LIMIT));
        token.faucet(ALICE, LIMIT + 1);
        vm.expectRevert(abi.encodeWithSelector(TestToken.FaucetLimit.selector, type(uint256).max, LIMIT));
        token.faucet(ALICE, type(uint256).max);
    }

    function test_faucet_revertsOnZeroRecipient() public {
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InvalidReceiver.selector, address(0)));
        token.faucet(address(0), 1 ether);
    }

    function test_transferAndTransferFrom() public {
        token.faucet(ALICE, 10 ether);
        vm.prank(ALICE);
        assertTrue(token.transfer(BOB, 3 ether), "transfer");
        vm.prank(ALICE);
        assertTrue(token.approve(address(this), 4 ether), "approve");
        assertTrue(token.transferFrom(ALICE, BOB, 4 ether), "transferFrom");
        assertEq(token.balanceOf(ALICE), 3 ether, "alice");
        assertEq(token.balanceOf(BOB), 7 ether, "bob");
        assertEq(token.allowance(ALICE, address(this)), 0, "allowance spent");
    }

    function testFuzz_faucet(address caller, address to, uint256 amount) public {
        vm.assume(to != address(0));
        if (amount > LIMIT) {
            vm.expectRevert(abi.encodeWithSelector(TestToken.FaucetLimit.selector, amount, LIMIT));
            vm.prank(caller);
            token.faucet(to, amount);
            assertEq(token.totalSupply(), 0, "nothing minted");
        } else {
            vm.prank(caller);
            token.faucet(to, amount);
            assertEq(token.balanceOf(to), amount, "balance");
            assertEq(token.totalSupply(), amount, "totalSupply");
        }
    }

    function testFuzz_faucet_belowLimit(address to, uint256 amount) public {
        vm.assume(to != address(0));
        amount = bound(amount, 0, LIMIT);
        token.faucet(to, amount);
        assertEq(token.balanceOf(to), amount, "balance");
    }
}
