// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title Trusted Pods payment channels
/// @notice One channel per (publisher, provider, pod id), funded in this deployment's ERC-20
/// token. The publisher locks funds; the provider is paid by cumulative claims, each signed
/// (EIP-712) by the enclave signer recorded when the channel was created, so only the attested
/// enclave's usage reports move money. The publisher gets back what is unclaimed after an unlock
/// delay during which the provider can still make its final claim.
/// @dev Gas: one token per deployment (an immutable, not a storage slot), two storage slots per
/// channel, a third only for channels with a spend cap. Timestamps are uint40; amounts uint128.
/// Closed channels stay as tombstones so a pod id, and with it every claim signature ever made
/// for it, can never be reused.
contract Payment is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct Channel {
        // slot 0
        address enclaveSigner; // zero means "no such channel"
        uint40 unlockAt; // zero means "no unlock requested"
        uint32 unlockDelay; // seconds
        bool closed;
        bool capped; // maxRate and createdAt live in `_caps`
        // slot 1
        uint128 deposited; // cumulative, over the channel's life
        uint128 claimed; // cumulative, over the channel's life
    }

    struct Cap {
        uint128 maxRate; // token base units per second
        uint40 createdAt;
    }

    bytes32 public constant CLAIM_TYPEHASH =
        keccak256("Claim(bytes32 channel,uint256 cumulativeAmount,bytes32 usageDigest)");

    /// @notice The ERC-20 every channel of this deployment is funded in.
    IERC20 public immutable token;

    mapping(bytes32 channelId => Channel) private _channels;
    mapping(bytes32 channelId => Cap) private _caps;

    event ChannelCreated(
        address indexed publisher,
        address indexed provider,
        bytes32 indexed channelId,
        bytes32 podId,
        address enclaveSigner,
        uint256 amount,
        uint32 unlockDelay,
        uint128 maxRate
    );
    event Deposited(
        address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 amount, uint256 deposited
    );
    event Claimed(
        address indexed publisher,
        address indexed provider,
        bytes32 indexed channelId,
        uint256 cumulativeAmount,
        bytes32 usageDigest
    );
    event UnlockRequested(address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 unlockAt);
    event UnlockCancelled(address indexed publisher, address indexed provider, bytes32 indexed channelId);
    event Withdrawn(address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 amount);
    event ChannelClosed(address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 refunded);

    error ChannelExists(bytes32 channelId);
    error ChannelIsClosed(bytes32 channelId);
    error ChannelNotFound(bytes32 channelId);
    error ZeroAddress();
    error ZeroAmount();
    error AmountTooLarge(uint256 amount);
    error ClaimNotIncreasing(uint256 cumulativeAmount, uint256 claimed);
    error ClaimExceedsDeposit(uint256 cumulativeAmount, uint256 deposited);
    error ClaimExceedsRate(uint256 cumulativeAmount, uint256 allowed);
    error InvalidSignature(address recovered, address expected);
    error UnlockAlreadyRequested(uint256 unlockAt);
    error UnlockNotRequested();
    error UnlockPending(uint256 unlockAt);
    error NothingToWithdraw();

    constructor(IERC20 token_) EIP712("TrustedPodsPayment", "1") {
        if (address(token_) == address(0)) revert ZeroAddress();
        token = token_;
    }

    // --- publisher -------------------------------------------------------------------------------

    /// @notice Opens the channel for (msg.sender, provider, podId) and locks `amount` tokens.
    /// @param maxRate Spend cap in token base units per second since creation; zero means none.
    function create(
        address provider,
        bytes32 podId,
        address enclaveSigner,
        uint256 amount,
        uint32 unlockDelay,
        uint128 maxRate
    ) external nonReentrant returns (bytes32 id) {
        if (provider == address(0) || enclaveSigner == address(0)) revert ZeroAddress();
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint128).max) revert AmountTooLarge(amount);
        id = channelId(msg.sender, provider, podId);
        Channel storage ch = _channels[id];
        if (ch.closed) revert ChannelIsClosed(id);
        if (ch.enclaveSigner != address(0)) revert ChannelExists(id);

        ch.enclaveSigner = enclaveSigner;
        ch.unlockDelay = unlockDelay;
        // forge-lint: disable-next-line(unsafe-typecast) -- bounded above
        ch.deposited = uint128(amount);
        if (maxRate != 0) {
            ch.capped = true;
            _caps[id] = Cap({maxRate: maxRate, createdAt: uint40(block.timestamp)});
        }

        emit ChannelCreated(msg.sender, provider, id, podId, enclaveSigner, amount, unlockDelay, maxRate);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Adds funds to an open channel. Cancels a pending unlock: the publisher wants to go on.
    function deposit(address provider, bytes32 podId, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        bytes32 id = channelId(msg.sender, provider, podId);
        Channel storage ch = _openChannel(id);
        uint256 deposited = uint256(ch.deposited) + amount;
        if (deposited > type(uint128).max) revert AmountTooLarge(amount);
        // forge-lint: disable-next-line(unsafe-typecast) -- bounded above
        ch.deposited = uint128(deposited);
        if (ch.unlockAt != 0) {
            ch.unlockAt = 0;
            emit UnlockCancelled(msg.sender, provider, id);
        }
        emit Deposited(msg.sender, provider, id, amount, deposited);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Starts the unlock delay, after which the publisher may withdraw what is unclaimed.
    function requestUnlock(address provider, bytes32 podId) external {
        bytes32 id = channelId(msg.sender, provider, podId);
        Channel storage ch = _openChannel(id);
        if (ch.unlockAt != 0) revert UnlockAlreadyRequested(ch.unlockAt);
        uint40 unlockAt = uint40(block.timestamp) + ch.unlockDelay;
        ch.unlockAt = unlockAt;
        emit UnlockRequested(msg.sender, provider, id, unlockAt);
    }

    /// @notice After the unlock delay, returns everything unclaimed to the publisher. The unlock
    /// stays requested: the channel only goes on after a new deposit.
    function withdrawUnlocked(address provider, bytes32 podId) external nonReentrant {
        bytes32 id = channelId(msg.sender, provider, podId);
        Channel storage ch = _openChannel(id);
        uint256 amount = _releaseUnlocked(ch);
        if (amount == 0) revert NothingToWithdraw();
        emit Withdrawn(msg.sender, provider, id, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Ends the channel for good. Anything unclaimed is returned, which needs the unlock
    /// delay to have passed unless the provider has already claimed everything.
    function close(address provider, bytes32 podId) external nonReentrant {
        bytes32 id = channelId(msg.sender, provider, podId);
        Channel storage ch = _openChannel(id);
        uint256 refunded = ch.deposited == ch.claimed ? 0 : _releaseUnlocked(ch);
        ch.closed = true;
        emit ChannelClosed(msg.sender, provider, id, refunded);
        if (refunded != 0) token.safeTransfer(msg.sender, refunded);
    }

    // --- provider (sent by anyone) -----------------------------------------------------------------

    /// @notice Pays the provider up to `cumulativeAmount` in total over the channel's life. The
    /// enclave signer's EIP-712 signature over (channel, cumulativeAmount, usageDigest), in the
    /// compact EIP-2098 form (r, yParityAndS), is the only authority; the sender is irrelevant and
    /// the money always goes to `provider`.
    function claim(
        address publisher,
        address provider,
        bytes32 podId,
        uint256 cumulativeAmount,
        bytes32 usageDigest,
        bytes32 r,
        bytes32 vs
    ) external nonReentrant {
        bytes32 id = channelId(publisher, provider, podId);
        Channel storage ch = _channels[id];
        address signer = ch.enclaveSigner;
        if (signer == address(0)) revert ChannelNotFound(id);
        // A closed channel has deposited == claimed, so the deposit check below refuses any claim.
        uint256 claimed = ch.claimed;
        uint256 deposited = ch.deposited;
        if (cumulativeAmount <= claimed) revert ClaimNotIncreasing(cumulativeAmount, claimed);
        if (cumulativeAmount > deposited) revert ClaimExceedsDeposit(cumulativeAmount, deposited);
        if (ch.capped) {
            Cap storage cap = _caps[id];
            uint256 allowed = uint256(cap.maxRate) * (block.timestamp - cap.createdAt);
            if (cumulativeAmount > allowed) revert ClaimExceedsRate(cumulativeAmount, allowed);
        }
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(CLAIM_TYPEHASH, id, cumulativeAmount, usageDigest)));
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, r, vs);
        if (err != ECDSA.RecoverError.NoError || recovered != signer) revert InvalidSignature(recovered, signer);

        // forge-lint: disable-next-line(unsafe-typecast) -- at most `deposited`, a uint128
        ch.claimed = uint128(cumulativeAmount);
        emit Claimed(publisher, provider, id, cumulativeAmount, usageDigest);
        token.safeTransfer(provider, cumulativeAmount - claimed);
    }

    // --- views -------------------------------------------------------------------------------------

    function channelId(address publisher, address provider, bytes32 podId) public pure returns (bytes32) {
        return keccak256(abi.encode(publisher, provider, podId));
    }

    function getChannel(bytes32 id) external view returns (Channel memory) {
        return _channels[id];
    }

    /// @notice A capped channel's spend cap and creation time (zeros when uncapped).
    function getCap(bytes32 id) external view returns (Cap memory) {
        return _caps[id];
    }

    /// @notice What is locked and not yet claimed.
    function unclaimed(bytes32 id) external view returns (uint256) {
        Channel storage ch = _channels[id];
        return ch.deposited - ch.claimed;
    }

    /// @notice The EIP-712 digest the enclave signs for a claim.
    function claimDigest(bytes32 id, uint256 cumulativeAmount, bytes32 usageDigest) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CLAIM_TYPEHASH, id, cumulativeAmount, usageDigest)));
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // --- internal ----------------------------------------------------------------------------------

    function _openChannel(bytes32 id) private view returns (Channel storage ch) {
        ch = _channels[id];
        if (ch.enclaveSigner == address(0)) revert ChannelNotFound(id);
        if (ch.closed) revert ChannelIsClosed(id);
    }

    /// Marks everything unclaimed as returned once the unlock delay has passed; returns the amount.
    function _releaseUnlocked(Channel storage ch) private returns (uint256 amount) {
        uint256 unlockAt = ch.unlockAt;
        if (unlockAt == 0) revert UnlockNotRequested();
        // Validators can skew time by seconds; unlock delays are hours.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < unlockAt) revert UnlockPending(unlockAt);
        uint128 claimed = ch.claimed;
        amount = ch.deposited - claimed;
        ch.deposited = claimed;
    }
}
