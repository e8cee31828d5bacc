// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Payment} from "../../src/Payment.sol";
import {MockERC20} from "./MockERC20.sol";
import {TestBase} from "./TestBase.sol";
import {Vm} from "./Vm.sol";

/// @notice A claim signature in the compact EIP-2098 form Payment.claim takes: r, and s with the
/// recovery bit (v - 27) in its top bit.
struct CompactSignature {
    bytes32 r;
    bytes32 vs;
}

/// @notice The claim digest as the spec defines it (EIP-712; domain "TrustedPodsPayment", version
/// "1") and the EIP-2098 encoding, written independently of Payment so tests can hold the contract
/// to them.
library PaymentSpec {
    Vm private constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant CLAIM_TYPEHASH =
        keccak256("Claim(bytes32 channel,uint256 cumulativeAmount,bytes32 usageDigest)");

    /// The top bit of `vs`: the recovery bit.
    uint256 internal constant PARITY_BIT = 1 << 255;
    /// The other 255 bits of `vs`: s.
    uint256 internal constant S_MASK = PARITY_BIT - 1;
    /// The largest s a signature may have (EIP-2; OpenZeppelin refuses anything above).
    uint256 internal constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    function domainSeparator(address verifyingContract, uint256 chainid) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("TrustedPodsPayment"), keccak256("1"), chainid, verifyingContract)
        );
    }

    function claimDigest(address verifyingContract, uint256 chainid, bytes32 id, uint256 cumulative, bytes32 usage)
        internal
        pure
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(CLAIM_TYPEHASH, id, cumulative, usage));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(verifyingContract, chainid), structHash));
    }

    /// EIP-2098: (r, s, v) -> (r, yParityAndS).
    function compact(uint8 v, bytes32 r, bytes32 s) internal pure returns (CompactSignature memory) {
        require(v == 27 || v == 28, "compact: v");
        require(uint256(s) <= S_MASK, "compact: s does not fit");
        return CompactSignature(r, bytes32((uint256(v - 27) << 255) | uint256(s)));
    }

    /// Signs `digest` with `key` (forge's signer: low s) and encodes it compactly.
    function sign(uint256 key, bytes32 digest) internal pure returns (CompactSignature memory) {
        (uint8 v, bytes32 r, bytes32 s) = VM.sign(key, digest);
        return compact(v, r, s);
    }

    /// The `recovered` Payment reports in InvalidSignature for a compact signature: what
    /// ecrecover makes of it, or zero when s is above HALF_N (refused before recovery).
    function recovered(bytes32 digest, CompactSignature memory sig) internal pure returns (address) {
        uint256 s = uint256(sig.vs) & S_MASK;
        if (s > HALF_N) return address(0);
        // forge-lint: disable-next-line(unsafe-typecast) -- 27 or 28
        uint8 v = uint8(27 + (uint256(sig.vs) >> 255));
        return ecrecover(digest, v, sig.r, bytes32(s));
    }

    /// The same signature with the recovery bit flipped.
    function flipParity(CompactSignature memory sig) internal pure returns (CompactSignature memory) {
        return CompactSignature(sig.r, bytes32(uint256(sig.vs) ^ PARITY_BIT));
    }
}

/// @notice Payment's storage layout, written down independently of Payment so tests can read its
/// slots directly (`forge inspect Payment storageLayout` for the mappings).
library PaymentLayout {
    /// EIP712's two fallback strings take slots 0 and 1, then the channel and cap mappings.
    uint256 internal constant CHANNELS_SLOT = 2;
    uint256 internal constant CAPS_SLOT = 3;
    /// The tag bit that keeps Balance slots apart from every mapping slot.
    uint256 internal constant BALANCE_TAG = 1 << 160;

    /// Balance flags.
    uint256 internal constant EXISTS = 1;
    uint256 internal constant CLOSED = 2;
    uint256 internal constant CAPPED = 4;

    /// The Channel record of `id`: enclaveSigner (160) | unlockDelay (32).
    function channelSlot(bytes32 id) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, CHANNELS_SLOT));
    }

    /// The Balance record of (`id`, `signer`): deposited (104) | claimed (104) | unlockAt (40) |
    /// flags (8).
    function balanceSlot(bytes32 id, address signer) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, uint256(uint160(signer)) | BALANCE_TAG));
    }

    /// The Cap record of `id`, written for capped channels only: maxRate (128) | createdAt (40).
    function capSlot(bytes32 id) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, CAPS_SLOT));
    }

    function packChannel(address signer, uint256 delay) internal pure returns (bytes32) {
        return bytes32(uint256(uint160(signer)) | delay << 160);
    }

    function packBalance(uint256 deposited, uint256 claimed, uint256 unlockAt, uint256 flags)
        internal
        pure
        returns (bytes32)
    {
        return bytes32(deposited | claimed << 104 | unlockAt << 208 | flags << 248);
    }

    function packCap(uint256 maxRate, uint256 createdAt) internal pure returns (bytes32) {
        return bytes32(maxRate | createdAt << 128);
    }
}

/// @notice Shared set-up and helpers for the Payment unit and fuzz tests.
abstract contract PaymentFixture is TestBase {
    bytes32 internal constant DOMAIN_TYPEHASH = PaymentSpec.DOMAIN_TYPEHASH;
    bytes32 internal constant CLAIM_TYPEHASH = PaymentSpec.CLAIM_TYPEHASH;
    /// Payment keeps amounts in uint104 (its `Balance` slot); AmountTooLarge above.
    uint256 internal constant MAX_AMOUNT = type(uint104).max;

    uint256 internal constant ENCLAVE_KEY = 0xE7C1A7E;
    uint256 internal constant OTHER_KEY = 0xBAD5EED;
    address internal constant PUBLISHER = address(0xA11CE);
    address internal constant PROVIDER = address(0xB0B);
    address internal constant STRANGER = address(0x5757);
    bytes32 internal constant POD = keccak256("pod-1");
    uint32 internal constant DELAY = 1 days;
    uint256 internal constant START = 1_700_000_000;

    MockERC20 internal token;
    Payment internal payment;
    address internal enclave;
    address internal otherSigner;

    function _deploy() internal {
        vm.warp(START);
        token = new MockERC20();
        payment = new Payment(IERC20(address(token)));
        enclave = vm.addr(ENCLAVE_KEY);
        otherSigner = vm.addr(OTHER_KEY);
        _fund(PUBLISHER, 1_000_000e18);
        vm.label(PUBLISHER, "publisher");
        vm.label(PROVIDER, "provider");
        vm.label(STRANGER, "stranger");
        vm.label(enclave, "enclave");
        vm.label(address(payment), "Payment");
        vm.label(address(token), "token");
    }

    function _fund(address who, uint256 amount) internal {
        token.mint(who, amount);
        vm.prank(who);
        token.approve(address(payment), type(uint256).max);
    }

    // --- channel helpers ---

    function _id(address publisher, address provider, bytes32 podId) internal pure returns (bytes32) {
        return keccak256(abi.encode(publisher, provider, podId));
    }

    function _id() internal pure returns (bytes32) {
        return _id(PUBLISHER, PROVIDER, POD);
    }

    function _create(uint256 amount, uint32 delay, uint128 maxRate) internal returns (bytes32 id) {
        vm.prank(PUBLISHER);
        id = payment.create(PROVIDER, POD, enclave, amount, delay, maxRate);
    }

    function _create(uint256 amount) internal returns (bytes32) {
        return _create(amount, DELAY, 0);
    }

    // --- EIP-712 and EIP-2098, from the spec ---

    function _domain(address verifyingContract, uint256 chainid) internal pure returns (bytes32) {
        return PaymentSpec.domainSeparator(verifyingContract, chainid);
    }

    function _digest(address verifyingContract, uint256 chainid, bytes32 id, uint256 cumulative, bytes32 usage)
        internal
        pure
        returns (bytes32)
    {
        return PaymentSpec.claimDigest(verifyingContract, chainid, id, cumulative, usage);
    }

    function _digest(bytes32 id, uint256 cumulative, bytes32 usage) internal view returns (bytes32) {
        return _digest(address(payment), block.chainid, id, cumulative, usage);
    }

    /// The compact signature of `digest` by `key`.
    function _sig(uint256 key, bytes32 digest) internal pure returns (CompactSignature memory) {
        return PaymentSpec.sign(key, digest);
    }

    function _sign(uint256 key, bytes32 id, uint256 cumulative, bytes32 usage)
        internal
        view
        returns (CompactSignature memory)
    {
        return _sig(key, _digest(id, cumulative, usage));
    }

    /// What Payment reports as `recovered` for `s` over `digest` (see PaymentSpec.recovered).
    function _recover(bytes32 digest, CompactSignature memory s) internal pure returns (address) {
        return PaymentSpec.recovered(digest, s);
    }

    /// Claims on the default channel with `s`, sent by whoever is pranked (or the test).
    function _claimWith(uint256 cumulative, bytes32 usage, CompactSignature memory s) internal {
        payment.claim(PUBLISHER, PROVIDER, POD, cumulative, usage, s.r, s.vs);
    }

    /// Claims on the default channel with the enclave's signature, sent by `sender`.
    function _claim(address sender, uint256 cumulative, bytes32 usage) internal {
        CompactSignature memory s = _sign(ENCLAVE_KEY, _id(), cumulative, usage);
        vm.prank(sender);
        _claimWith(cumulative, usage, s);
    }

    function _claim(uint256 cumulative) internal {
        _claim(PROVIDER, cumulative, keccak256(abi.encode("usage", cumulative)));
    }

    /// Expects InvalidSignature for `s` used over `digest` on the default channel (whose signer
    /// is the enclave).
    function _expectInvalidSignature(bytes32 digest, CompactSignature memory s) internal {
        vm.expectRevert(abi.encodeWithSelector(Payment.InvalidSignature.selector, _recover(digest, s), enclave));
    }

    // --- stored state ---

    /// An uncapped channel (or none, with signer zero): maxRate and createdAt read as zero.
    function _assertChannel(
        bytes32 id,
        address signer,
        uint256 unlockAt,
        bool closed,
        uint256 deposited,
        uint256 claimed,
        uint256 delay
    ) internal view {
        _assertChannel(id, signer, unlockAt, closed, deposited, claimed, delay, 0, 0);
    }

    /// Any channel; `maxRate` zero means uncapped, and then `createdAt` must be zero too (an
    /// uncapped channel does not record its creation time).
    function _assertChannel(
        bytes32 id,
        address signer,
        uint256 unlockAt,
        bool closed,
        uint256 deposited,
        uint256 claimed,
        uint256 delay,
        uint256 maxRate,
        uint256 createdAt
    ) internal view {
        Payment.ChannelView memory ch = payment.getChannel(id);
        assertEq(ch.enclaveSigner, signer, "enclaveSigner");
        assertEq(ch.unlockAt, unlockAt, "unlockAt");
        assertEq(ch.unlockDelay, delay, "unlockDelay");
        assertEq(ch.closed, closed, "closed");
        assertEq(ch.deposited, deposited, "deposited");
        assertEq(ch.claimed, claimed, "claimed");
        assertEq(payment.unclaimed(id), deposited - claimed, "unclaimed");
        assertEq(ch.maxRate, maxRate, "maxRate");
        assertEq(ch.createdAt, createdAt, "createdAt");
    }
}
