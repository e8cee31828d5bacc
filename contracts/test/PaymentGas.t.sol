// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Payment} from "../src/Payment.sol";
import {CompactSignature, PaymentSpec} from "./utils/PaymentFixture.sol";
import {MockERC20} from "./utils/MockERC20.sol";
import {TestBase} from "./utils/TestBase.sol";

/// Tells whether forge runs each top-level call as its own transaction (`--isolate`): transient
/// storage written by one call is gone in the next only then.
contract IsolationProbe {
    function set() external {
        assembly ("memory-safe") {
            tstore(0, 1)
        }
    }

    function get() external view returns (uint256 v) {
        assembly ("memory-safe") {
            v := tload(0)
        }
    }
}

/// @notice Gas of each Payment step in realistic conditions, recorded in snapshots/PaymentGas.json
/// for `contracts/gas`, which compares them with the earlier Go implementation.
///
/// Every test makes exactly one Payment call, its first call touching any state, and everything it
/// needs is prepared in setUp (a separate transaction). So storage and accounts are cold, as in a
/// transaction of its own, with or without `forge test --isolate`.
///
/// Recorded per step:
///   <step>            whole-transaction gas: the receipt's gasUsed if the call were sent as its
///                     own transaction, i.e. what `forge test --gas-report` prints for it (forge
///                     isolates every call for gas reports): 21,000 base + calldata (EIP-2028:
///                     4 per zero byte, 16 per non-zero byte) + execution.
///   <step>_execution  execution only: the 21,000 base and the calldata cost left out.
/// Under --isolate forge measures the whole transaction; without it, the call frame (execution);
/// the test adds or subtracts 21,000 + calldata accordingly. None of these steps earns a refund,
/// so both modes give the same figures (`contracts/gas` runs both and checks).
///
/// Conditions: an OpenZeppelin ERC-20; Payment already holds funds of other channels; publishers
/// keep a non-zero token balance and gave Payment an unlimited allowance (the usual wallet
/// set-up; OpenZeppelin then skips the allowance write); addresses and pod ids are full-width;
/// channels have no spend cap (maxRate 0). The capped variants of create and claim, which touch
/// the extra cap slot, are recorded too (createCapped, claimCapped) but not compared, and so is
/// the provider's release, which the earlier implementation did not have.
contract PaymentGas is TestBase {
    uint256 internal constant ENCLAVE_KEY = uint256(keccak256("gas: enclave key"));
    uint32 internal constant DELAY = 1 days;

    MockERC20 internal token;
    Payment internal payment;
    IsolationProbe internal probe;
    address internal enclave;
    address internal publisher;
    address internal providerWarm; // already holds tokens
    address internal providerFresh; // holds none

    bytes32 internal podNew; // not created yet
    bytes32 internal podDeposit; // open, funded
    bytes32 internal podClaimWarm; // open, funded, claimed once (providerWarm)
    bytes32 internal podClaimFresh; // open, funded, never claimed (providerFresh)
    bytes32 internal podRequest; // open, funded, no unlock pending
    bytes32 internal podWithdraw; // partly claimed, unlock requested, delay over
    bytes32 internal podClaimCapped; // open, funded, capped, claimed once (providerWarm)
    bytes32 internal podRelease; // open, funded, no unlock pending (claims would not change the cost)

    function setUp() public {
        vm.warp(1_700_000_000);
        token = new MockERC20();
        payment = new Payment(IERC20(address(token)));
        probe = new IsolationProbe();
        enclave = vm.addr(ENCLAVE_KEY);
        publisher = vm.addr(uint256(keccak256("gas: publisher")));
        providerWarm = vm.addr(uint256(keccak256("gas: provider warm")));
        providerFresh = vm.addr(uint256(keccak256("gas: provider fresh")));
        podNew = keccak256("gas: pod new");
        podDeposit = keccak256("gas: pod deposit");
        podClaimWarm = keccak256("gas: pod claim warm");
        podClaimFresh = keccak256("gas: pod claim fresh");
        podRequest = keccak256("gas: pod request");
        podWithdraw = keccak256("gas: pod withdraw");
        podClaimCapped = keccak256("gas: pod claim capped");
        podRelease = keccak256("gas: pod release");

        token.mint(publisher, 1_000_000e18);
        vm.prank(publisher);
        token.approve(address(payment), type(uint256).max);

        _create(providerWarm, podDeposit);
        _create(providerWarm, podClaimWarm);
        _create(providerFresh, podClaimFresh);
        _create(providerWarm, podRequest);
        _create(providerWarm, podWithdraw);
        _create(providerWarm, podRelease);
        vm.prank(publisher);
        payment.create(providerWarm, podClaimCapped, enclave, 100e18, DELAY, 1e18);

        // providerWarm has been paid before on this channel; providerFresh never.
        _claimCall(providerWarm, podClaimWarm, 10e18);
        _claimCall(providerWarm, podWithdraw, 25e18);
        vm.warp(block.timestamp + 100);
        _claimCall(providerWarm, podClaimCapped, 10e18);
        vm.prank(publisher);
        payment.requestUnlock(providerWarm, podWithdraw);
        vm.warp(block.timestamp + DELAY);
    }

    function test_gas_create() public {
        bytes memory data = abi.encodeCall(Payment.create, (providerWarm, podNew, enclave, 100e18, DELAY, 0));
        vm.prank(publisher);
        payment.create(providerWarm, podNew, enclave, 100e18, DELAY, 0);
        _record("create", data);
    }

    function test_gas_createCapped() public {
        bytes memory data = abi.encodeCall(Payment.create, (providerWarm, podNew, enclave, 100e18, DELAY, 1e18));
        vm.prank(publisher);
        payment.create(providerWarm, podNew, enclave, 100e18, DELAY, 1e18);
        _record("createCapped", data);
    }

    function test_gas_deposit() public {
        bytes memory data = abi.encodeCall(Payment.deposit, (providerWarm, podDeposit, enclave, 50e18));
        vm.prank(publisher);
        payment.deposit(providerWarm, podDeposit, enclave, 50e18);
        _record("deposit", data);
    }

    function test_gas_claimWarmRecipient() public {
        bytes memory data = _claimData(providerWarm, podClaimWarm, 20e18);
        vm.prank(providerWarm);
        (bool ok,) = address(payment).call(data);
        require(ok, "claim failed");
        _record("claimWarmRecipient", data);
        require(token.balanceOf(providerWarm) == 55e18, "paid");
    }

    function test_gas_claimFreshRecipient() public {
        bytes memory data = _claimData(providerFresh, podClaimFresh, 20e18);
        vm.prank(providerFresh);
        (bool ok,) = address(payment).call(data);
        require(ok, "claim failed");
        _record("claimFreshRecipient", data);
        require(token.balanceOf(providerFresh) == 20e18, "paid");
    }

    function test_gas_claimCapped() public {
        bytes memory data = _claimData(providerWarm, podClaimCapped, 20e18);
        vm.prank(providerWarm);
        (bool ok,) = address(payment).call(data);
        require(ok, "claim failed");
        _record("claimCapped", data);
        require(token.balanceOf(providerWarm) == 55e18, "paid");
    }

    function test_gas_requestUnlock() public {
        bytes memory data = abi.encodeCall(Payment.requestUnlock, (providerWarm, podRequest));
        vm.prank(publisher);
        payment.requestUnlock(providerWarm, podRequest);
        _record("requestUnlock", data);
    }

    function test_gas_release() public {
        bytes memory data = abi.encodeCall(Payment.release, (publisher, podRelease));
        vm.prank(providerWarm);
        payment.release(publisher, podRelease);
        _record("release", data);
        require(payment.getChannel(payment.channelId(publisher, providerWarm, podRelease)).unlockAt != 0, "released");
    }

    function test_gas_withdrawUnlocked() public {
        bytes memory data = abi.encodeCall(Payment.withdrawUnlocked, (providerWarm, podWithdraw, enclave));
        vm.prank(publisher);
        payment.withdrawUnlocked(providerWarm, podWithdraw, enclave);
        _record("withdrawUnlocked", data);
        require(payment.unclaimed(payment.channelId(publisher, providerWarm, podWithdraw)) == 0, "withdrawn");
    }

    // --- helpers ---

    function _create(address provider, bytes32 pod) private {
        vm.prank(publisher);
        payment.create(provider, pod, enclave, 100e18, DELAY, 0);
    }

    function _claimData(address provider, bytes32 pod, uint256 cumulative) private view returns (bytes memory) {
        bytes32 id = keccak256(abi.encode(publisher, provider, pod));
        bytes32 usage = keccak256(abi.encode("gas: usage", pod, cumulative));
        bytes32 digest = PaymentSpec.claimDigest(address(payment), block.chainid, id, cumulative, usage);
        CompactSignature memory s = PaymentSpec.sign(ENCLAVE_KEY, digest);
        return abi.encodeCall(Payment.claim, (publisher, provider, pod, cumulative, usage, s.r, s.vs));
    }

    function _claimCall(address provider, bytes32 pod, uint256 cumulative) private {
        (bool ok,) = address(payment).call(_claimData(provider, pod, cumulative));
        require(ok, "setup claim failed");
    }

    /// Records the last call's gas (see the contract comment).
    function _record(string memory step, bytes memory data) private {
        uint256 measured = vm.lastCallGas().gasTotalUsed;
        uint256 intrinsic = 21_000 + _calldataGas(data);
        uint256 execution = _isolated() ? measured - intrinsic : measured;
        assertGt(execution, 0, "measured");
        vm.snapshotValue("PaymentGas", step, execution + intrinsic);
        vm.snapshotValue("PaymentGas", string.concat(step, "_execution"), execution);
    }

    function _calldataGas(bytes memory data) private pure returns (uint256 g) {
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }

    function _isolated() private returns (bool) {
        probe.set();
        return probe.get() == 0;
    }
}
