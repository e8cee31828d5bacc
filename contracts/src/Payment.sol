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
/// delay during which the provider can still make its final claim, or at once if the provider
/// releases the channel (it has made its final claim).
/// @dev Storage is laid out for gas. A channel's money lives in one `Balance` slot keyed by
/// (channel id, enclave signer): a claim recovers the signer from its signature and reads that
/// one slot; only the real signer's slot was ever funded, so a forged signature finds nothing to
/// claim (the slow path then names the exact reason). Publisher calls name the enclave signer for
/// the same reason (one slot, not two). The token is an immutable, not a slot; a third slot is
/// only written for channels with a spend cap. Closed channels stay as tombstones so a pod id,
/// and with it every claim signature ever made for it, can never be reused.
contract Payment is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// Fixed at creation; read by requestUnlock, release and the slow paths only.
    struct Channel {
        address enclaveSigner; // zero means "no such channel"
        uint32 unlockDelay; // seconds
    }

    /// Everything the money paths need, in one slot keyed by (channel id, enclave signer).
    struct Balance {
        uint104 deposited; // cumulative over the channel's life (2e31 base units at most)
        uint104 claimed; // cumulative over the channel's life
        uint40 unlockAt; // zero means "no unlock requested"
        uint8 flags; // EXISTS | CLOSED | CAPPED
    }

    /// Only for channels created with a spend cap.
    struct Cap {
        uint128 maxRate; // token base units per second since creation
        uint40 createdAt;
    }

    /// A channel as `getChannel` reports it.
    struct ChannelView {
        address enclaveSigner;
        uint32 unlockDelay;
        uint256 deposited;
        uint256 claimed;
        uint40 unlockAt;
        bool closed;
        uint128 maxRate;
        uint40 createdAt;
    }

    uint8 private constant EXISTS = 1;
    uint8 private constant CLOSED = 2;
    uint8 private constant CAPPED = 4;

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
        address indexed publisher,
        address indexed provider,
        bytes32 indexed channelId,
        uint256 amount,
        uint256 deposited
    );
    event Claimed(
        address indexed publisher,
        address indexed provider,
        bytes32 indexed channelId,
        uint256 cumulativeAmount,
        bytes32 usageDigest
    );
    event UnlockRequested(
        address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 unlockAt
    );
    event UnlockCancelled(address indexed publisher, address indexed provider, bytes32 indexed channelId);
    event Released(address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 unlockAt);
    event Withdrawn(address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 amount);
    event ChannelClosed(
        address indexed publisher, address indexed provider, bytes32 indexed channelId, uint256 refunded
    );

    error ChannelExists(bytes32 channelId);
    error ChannelIsClosed(bytes32 channelId);
    error ChannelNotFound(bytes32 channelId);
    error WrongEnclaveSigner(bytes32 channelId, address given, address recorded);
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
        if (amount > type(uint104).max) revert AmountTooLarge(amount);
        id = channelId(msg.sender, provider, podId);
        Channel storage ch = _channels[id];
        address existing = ch.enclaveSigner;
        if (existing != address(0)) {
            if (_balance(id, existing).flags & CLOSED != 0) revert ChannelIsClosed(id);
            revert ChannelExists(id);
        }
        ch.enclaveSigner = enclaveSigner;
        ch.unlockDelay = unlockDelay;
        Balance storage b = _balance(id, enclaveSigner);
        // forge-lint: disable-next-line(unsafe-typecast) -- bounded above
        b.deposited = uint104(amount);
        if (maxRate != 0) {
            b.flags = EXISTS | CAPPED;
            _caps[id] = Cap({maxRate: maxRate, createdAt: uint40(block.timestamp)});
        } else {
            b.flags = EXISTS;
        }
        emit ChannelCreated(msg.sender, provider, id, podId, enclaveSigner, amount, unlockDelay, maxRate);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Adds funds to an open channel. Cancels a pending unlock: the publisher wants to go on.
    function deposit(address provider, bytes32 podId, address enclaveSigner, uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        bytes32 id = channelId(msg.sender, provider, podId);
        Balance storage b = _open(id, enclaveSigner);
        uint256 deposited = uint256(b.deposited) + amount;
        if (deposited > type(uint104).max) revert AmountTooLarge(amount);
        // forge-lint: disable-next-line(unsafe-typecast) -- bounded above
        b.deposited = uint104(deposited);
        if (b.unlockAt != 0) {
            b.unlockAt = 0;
            emit UnlockCancelled(msg.sender, provider, id);
        }
        emit Deposited(msg.sender, provider, id, amount, deposited);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Starts the unlock delay, after which the publisher may withdraw what is unclaimed.
    function requestUnlock(address provider, bytes32 podId) external {
        bytes32 id = channelId(msg.sender, provider, podId);
        Channel storage ch = _channels[id];
        Balance storage b = _open(id, ch.enclaveSigner);
        if (b.unlockAt != 0) revert UnlockAlreadyRequested(b.unlockAt);
        uint40 unlockAt = uint40(block.timestamp) + ch.unlockDelay;
        b.unlockAt = unlockAt;
        emit UnlockRequested(msg.sender, provider, id, unlockAt);
    }

    /// @notice After the unlock delay, returns everything unclaimed to the publisher. The unlock
    /// stays requested: the channel only goes on after a new deposit.
    function withdrawUnlocked(address provider, bytes32 podId, address enclaveSigner) external nonReentrant {
        bytes32 id = channelId(msg.sender, provider, podId);
        Balance storage b = _open(id, enclaveSigner);
        uint256 amount = _releaseUnlocked(b);
        if (amount == 0) revert NothingToWithdraw();
        emit Withdrawn(msg.sender, provider, id, amount);
        token.safeTransfer(msg.sender, amount);
    }

    /// @notice Ends the channel for good. Anything unclaimed is returned, which needs the unlock
    /// delay to have passed (or the provider's release) unless the provider has already claimed
    /// everything.
    function close(address provider, bytes32 podId, address enclaveSigner) external nonReentrant {
        bytes32 id = channelId(msg.sender, provider, podId);
        Balance storage b = _open(id, enclaveSigner);
        uint256 refunded = b.deposited == b.claimed ? 0 : _releaseUnlocked(b);
        b.flags |= CLOSED;
        emit ChannelClosed(msg.sender, provider, id, refunded);
        if (refunded != 0) token.safeTransfer(msg.sender, refunded);
    }

    // --- provider (sent by the provider only) ------------------------------------------------------

    /// @notice The provider has made its final claim and waives the rest of the unlock delay: the
    /// publisher may withdraw what is unclaimed, or close with a refund, at once. Unlocks now
    /// whether or not the publisher requested an unlock; a later deposit cancels it as it cancels
    /// any unlock (the publisher wants to go on). Claims still work until the publisher withdraws.
    /// @dev Only the provider can release: the channel id includes msg.sender as the provider, so
    /// anyone else addresses a channel that does not exist (ChannelNotFound).
    function release(address publisher, bytes32 podId) external {
        bytes32 id = channelId(publisher, msg.sender, podId);
        Balance storage b = _open(id, _channels[id].enclaveSigner);
        uint40 unlockAt = b.unlockAt;
        // Only ever brings the unlock forward: one already due stays as it is. Validators can skew
        // time by seconds; unlock delays are hours.
        // forge-lint: disable-next-line(block-timestamp)
        if (unlockAt == 0 || unlockAt > block.timestamp) {
            unlockAt = uint40(block.timestamp);
            b.unlockAt = unlockAt;
        }
        emit Released(publisher, msg.sender, id, unlockAt);
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
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(CLAIM_TYPEHASH, id, cumulativeAmount, usageDigest)));
        // A malformed signature recovers to zero, whose slot is never funded.
        (address recovered,,) = ECDSA.tryRecover(digest, r, vs);
        Balance storage b = _balance(id, recovered);
        uint256 claimed = b.claimed;
        bool ok = cumulativeAmount > claimed && cumulativeAmount <= b.deposited;
        if (ok && b.flags & CAPPED != 0) {
            Cap storage cap = _caps[id];
            // A rate cap over seconds; validator skew of a few seconds is within tolerance.
            // forge-lint: disable-next-line(block-timestamp)
            ok = cumulativeAmount <= uint256(cap.maxRate) * (block.timestamp - cap.createdAt);
        }
        if (!ok) _claimFailure(id, cumulativeAmount, recovered);
        // forge-lint: disable-next-line(unsafe-typecast) -- at most `deposited`, a uint104
        b.claimed = uint104(cumulativeAmount);
        emit Claimed(publisher, provider, id, cumulativeAmount, usageDigest);
        token.safeTransfer(provider, cumulativeAmount - claimed);
    }

    // --- views -------------------------------------------------------------------------------------

    function channelId(address publisher, address provider, bytes32 podId) public pure returns (bytes32) {
        return keccak256(abi.encode(publisher, provider, podId));
    }

    function getChannel(bytes32 id) external view returns (ChannelView memory v) {
        Channel storage ch = _channels[id];
        Balance storage b = _balance(id, ch.enclaveSigner);
        Cap storage cap = _caps[id];
        v = ChannelView({
            enclaveSigner: ch.enclaveSigner,
            unlockDelay: ch.unlockDelay,
            deposited: b.deposited,
            claimed: b.claimed,
            unlockAt: b.unlockAt,
            closed: b.flags & CLOSED != 0,
            maxRate: cap.maxRate,
            createdAt: cap.createdAt
        });
    }

    /// @notice What is locked and not yet claimed.
    function unclaimed(bytes32 id) external view returns (uint256) {
        Balance storage b = _balance(id, _channels[id].enclaveSigner);
        return b.deposited - b.claimed;
    }

    /// @notice The EIP-712 digest the enclave signs for a claim.
    function claimDigest(bytes32 id, uint256 cumulativeAmount, bytes32 usageDigest) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CLAIM_TYPEHASH, id, cumulativeAmount, usageDigest)));
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    // --- internal ----------------------------------------------------------------------------------

    /// The slow path of a refused claim: reverts with the precise reason.
    function _claimFailure(bytes32 id, uint256 cumulativeAmount, address recovered) private view {
        address signer = _channels[id].enclaveSigner;
        if (signer == address(0)) revert ChannelNotFound(id);
        Balance storage b = _balance(id, signer);
        uint256 claimed = b.claimed;
        uint256 deposited = b.deposited;
        if (cumulativeAmount <= claimed) revert ClaimNotIncreasing(cumulativeAmount, claimed);
        if (cumulativeAmount > deposited) revert ClaimExceedsDeposit(cumulativeAmount, deposited);
        if (b.flags & CAPPED != 0) {
            Cap storage cap = _caps[id];
            uint256 allowed = uint256(cap.maxRate) * (block.timestamp - cap.createdAt);
            if (cumulativeAmount > allowed) revert ClaimExceedsRate(cumulativeAmount, allowed);
        }
        revert InvalidSignature(recovered, signer);
    }

    /// The Balance slot of (id, signer): keccak256(id, signer | 1 << 160). The tag bit keeps it
    /// apart from every Solidity mapping slot, whose second word is a small slot index.
    function _balance(bytes32 id, address signer) private pure returns (Balance storage b) {
        assembly ("memory-safe") {
            mstore(0, id)
            mstore(0x20, or(signer, shl(160, 1)))
            b.slot := keccak256(0, 0x40)
        }
    }

    function _open(bytes32 id, address signer) private view returns (Balance storage b) {
        b = _balance(id, signer);
        uint8 flags = b.flags;
        if (flags & EXISTS == 0) {
            address recorded = _channels[id].enclaveSigner;
            if (recorded == address(0)) revert ChannelNotFound(id);
            revert WrongEnclaveSigner(id, signer, recorded);
        }
        if (flags & CLOSED != 0) revert ChannelIsClosed(id);
    }

    /// Marks everything unclaimed as returned once the unlock delay has passed; returns the amount.
    function _releaseUnlocked(Balance storage b) private returns (uint256 amount) {
        uint256 unlockAt = b.unlockAt;
        if (unlockAt == 0) revert UnlockNotRequested();
        // Validators can skew time by seconds; unlock delays are hours.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp < unlockAt) revert UnlockPending(unlockAt);
        uint104 claimed = b.claimed;
        amount = b.deposited - claimed;
        b.deposited = claimed;
    }
}
