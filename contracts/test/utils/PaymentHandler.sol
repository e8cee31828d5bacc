// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Payment} from "../../src/Payment.sol";
import {CompactSignature, PaymentSpec} from "./PaymentFixture.sol";
import {ReentrantToken} from "./ReentrantToken.sol";
import {TestBase} from "./TestBase.sol";

interface IMintableERC20 is IERC20 {
    function mint(address to, uint256 amount) external;
}

/// @notice Drives Payment for the invariant tests: three publishers, three providers, three pod ids
/// (so up to 27 channels, and collisions that exercise ChannelExists / ChannelIsClosed), three
/// known enclave keys, plus attackers with random keys and random senders. Token holders are only
/// the publishers, the providers and Payment: anyone else ending up with tokens is a leak.
///
/// The publisher's deposit, withdrawUnlocked and close name the enclave signer: mostly the recorded
/// one, sometimes another (another known enclave key, zero, a random address), which must be
/// refused with WrongEnclaveSigner and change nothing. The provider's release is sent mostly by
/// the provider, sometimes by others, who address a channel of their own (usually none).
///
/// Every call predicts its outcome from a ghost model of each channel and records any
/// disagreement with Payment in `unexpected`; ghost totals back the invariants in
/// PaymentInvariant.t.sol. With a ReentrantToken, each money-moving call is made with the token
/// armed to re-enter Payment.
contract PaymentHandler is TestBase {
    uint256 internal constant MAX_AMOUNT = type(uint104).max; // Payment's amounts are uint104
    bytes4 internal constant OK = bytes4(0);
    bytes4 internal constant EMPTY_REVERT = 0xffffffff;

    struct Ghost {
        uint8 publisher;
        uint8 provider;
        bytes32 podId;
        uint256 key; // zero: no channel
        uint256 createdAt; // Payment records it only for capped channels
        uint256 maxRate; // zero: uncapped
        uint256 delay;
        uint256 deposits; // everything ever put in
        uint256 claims; // cumulative claimed
        uint256 withdrawn; // everything returned to the publisher (withdrawals and close refunds)
        uint256 unlockAt;
        bool closed;
    }

    struct ClaimCall {
        address publisher;
        address provider;
        bytes32 podId;
        uint256 amount;
        bytes32 usage;
        bytes32 r;
        bytes32 vs;
    }

    Payment public immutable payment;
    IMintableERC20 public immutable token;
    ReentrantToken public immutable evil; // zero for a well-behaved token

    address[] public publishers;
    address[] public providers;
    bytes32[] public pods;
    uint256[] internal enclaveKeys;

    bytes32[] public ids;
    mapping(bytes32 => Ghost) internal _ghost;

    ClaimCall internal _lastClaim;
    bool internal _hasLastClaim;

    // --- ghost totals ---
    mapping(address => uint256) public minted;
    mapping(address => uint256) public depositedBy; // by publisher
    mapping(address => uint256) public withdrawnTo; // by publisher, own channels only
    mapping(address => uint256) public paidTo; // by provider, enclave-signed claims only

    uint256 public forgedSuccesses; // a claim not signed by the channel's enclave went through
    uint256 public withdrawMismatches; // a withdrawal/refund differed from deposited - claimed
    uint256 public wrongSignerCalls; // publisher calls made with a wrong enclave signer
    uint256 public unexpected; // any outcome the model did not predict
    string public firstUnexpected;

    // --- coverage counters ---
    mapping(string => uint256) public succeeded;
    mapping(string => uint256) public reverted;

    constructor(Payment payment_, IMintableERC20 token_, ReentrantToken evil_) {
        payment = payment_;
        token = token_;
        evil = evil_;
        for (uint256 i; i < 3; ++i) {
            address p = address(uint160(uint256(keccak256(abi.encode("publisher", i)))));
            publishers.push(p);
            vm.prank(p);
            token.approve(address(payment), type(uint256).max);
            providers.push(address(uint160(uint256(keccak256(abi.encode("provider", i))))));
            pods.push(keccak256(abi.encode("pod", i)));
            enclaveKeys.push(uint256(keccak256(abi.encode("enclave", i))) % (SECP256K1_N - 1) + 1);
        }
    }

    // =============================================================================================
    // actions
    // =============================================================================================

    function create(
        uint256 pubSeed,
        uint256 provSeed,
        uint256 podSeed,
        uint256 keySeed,
        uint256 amount,
        uint256 delay,
        uint256 rate,
        uint256 armSeed
    ) external {
        // forge-lint: disable-next-line(unsafe-typecast) -- below 3
        uint8 p = uint8(pubSeed % publishers.length);
        // forge-lint: disable-next-line(unsafe-typecast) -- below 3
        uint8 q = uint8(provSeed % providers.length);
        bytes32 pod = pods[podSeed % pods.length];
        uint256 key = enclaveKeys[keySeed % enclaveKeys.length];
        amount = _amount(amount);
        uint32 d = uint32(bound(delay, 0, 3 days));
        uint128 maxRate = _rate(rate);
        address pub = publishers[p];
        bytes32 id = keccak256(abi.encode(pub, providers[q], pod));
        Ghost storage g = _ghost[id];

        bytes4 expected = OK;
        if (amount == 0) expected = Payment.ZeroAmount.selector;
        else if (amount > MAX_AMOUNT) expected = Payment.AmountTooLarge.selector;
        else if (g.closed) expected = Payment.ChannelIsClosed.selector;
        else if (g.key != 0) expected = Payment.ChannelExists.selector;
        if (expected == OK) _mint(pub, amount);

        _arm(armSeed);
        vm.prank(pub);
        bytes4 outcome;
        try payment.create(providers[q], pod, vm.addr(key), amount, d, maxRate) returns (bytes32 got) {
            if (got != id) _unexpected("create: wrong id");
        } catch (bytes memory err) {
            outcome = _selector(err);
        }
        _disarm();
        if (_check("create", expected, outcome) && outcome == OK) {
            ids.push(id);
            g.publisher = p;
            g.provider = q;
            g.podId = pod;
            g.key = key;
            g.createdAt = block.timestamp;
            g.maxRate = maxRate;
            g.delay = d;
            g.deposits = amount;
            depositedBy[pub] += amount;
        }
    }

    function deposit(uint256 chSeed, uint256 amount, uint256 armSeed, uint256 signerSeed) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];
        amount = _amount(amount);
        address pub = publishers[g.publisher];
        (address signer, bool wrong) = _signer(g, signerSeed);

        bytes4 expected = OK;
        if (amount == 0) expected = Payment.ZeroAmount.selector;
        else if (wrong) expected = Payment.WrongEnclaveSigner.selector;
        else if (g.closed) expected = Payment.ChannelIsClosed.selector;
        else if (_deposited(g) + amount > MAX_AMOUNT) expected = Payment.AmountTooLarge.selector;
        if (expected == OK) _mint(pub, amount);

        _arm(armSeed);
        vm.prank(pub);
        bytes4 outcome;
        try payment.deposit(providers[g.provider], g.podId, signer, amount) {}
        catch (bytes memory err) {
            outcome = _selector(err);
            _checkWrongSigner("deposit", err, id, signer, g);
        }
        _disarm();
        if (_check("deposit", expected, outcome) && outcome == OK) {
            g.deposits += amount;
            g.unlockAt = 0;
            depositedBy[pub] += amount;
        }
    }

    /// A claim signed by the channel's enclave key, sent by anyone. Mostly valid amounts, sometimes
    /// non-increasing, above the deposit or above the rate cap.
    function claim(uint256 chSeed, uint256 amountSeed, uint256 senderSeed, bytes32 usage, uint256 armSeed) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];
        uint256 cumulative = _claimAmount(g, amountSeed);
        uint256 claimed = g.claims;

        bytes4 expected = OK;
        if (cumulative <= claimed) expected = Payment.ClaimNotIncreasing.selector;
        else if (cumulative > _deposited(g)) expected = Payment.ClaimExceedsDeposit.selector;
        else if (cumulative > _allowed(g)) expected = Payment.ClaimExceedsRate.selector;

        CompactSignature memory s = PaymentSpec.sign(g.key, _digest(id, cumulative, usage));
        ClaimCall memory c =
            ClaimCall(publishers[g.publisher], providers[g.provider], g.podId, cumulative, usage, s.r, s.vs);
        uint256 before = token.balanceOf(c.provider);
        address sender = _sender(senderSeed, c);

        _arm(armSeed);
        vm.prank(sender);
        bytes4 outcome;
        try payment.claim(c.publisher, c.provider, c.podId, c.amount, c.usage, c.r, c.vs) {}
        catch (bytes memory err) {
            outcome = _selector(err);
        }
        _disarm();
        if (_check("claim", expected, outcome) && outcome == OK) {
            uint256 paid = cumulative - claimed;
            if (token.balanceOf(c.provider) != before + paid) _unexpected("claim: provider not paid the difference");
            g.claims = cumulative;
            paidTo[c.provider] += paid;
            _lastClaim = c;
            _hasLastClaim = true;
        }
    }

    /// Claims that are not the enclave's: random keys, signatures lifted from other channels,
    /// chains, contracts, amounts or usage digests, high-s, wrong-parity or malformed signatures,
    /// replays. All must fail; none may pay.
    function claimForged(
        uint256 chSeed,
        uint256 mode,
        uint256 keySeed,
        uint256 amountSeed,
        uint256 senderSeed,
        bytes32 usage,
        bytes32 junkR,
        bytes32 junkVs
    ) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];
        ClaimCall memory c;
        c.publisher = publishers[g.publisher];
        c.provider = providers[g.provider];
        c.podId = g.podId;
        c.usage = usage;
        // An amount that would pass every check but the signature, where one exists.
        uint256 cap = _cap(g);
        c.amount = cap > g.claims ? bound(amountSeed, g.claims + 1, cap) : g.claims + 1;
        bool amountValid = cap > g.claims;

        mode = mode % 12;
        CompactSignature memory s;
        if (mode == 0) {
            // An attacker's own key.
            uint256 key = boundKey(keySeed);
            if (key == g.key) key = key == 1 ? 2 : key - 1;
            s = PaymentSpec.sign(key, _digest(id, c.amount, usage));
        } else if (mode == 1) {
            // The right key, another channel (same parties, another pod id).
            bytes32 other = keccak256(abi.encode(c.publisher, c.provider, keccak256(abi.encode(keySeed))));
            s = PaymentSpec.sign(g.key, _digest(other, c.amount, usage));
        } else if (mode == 2) {
            // The right key, another amount.
            s = PaymentSpec.sign(g.key, _digest(id, c.amount + 1 + keySeed % 1e18, usage));
        } else if (mode == 3) {
            // The right key, another usage digest.
            s = PaymentSpec.sign(g.key, _digest(id, c.amount, usage ^ bytes32(keySeed | 1)));
        } else if (mode == 4) {
            // The right key, another chain.
            uint256 chainid = block.chainid + 1 + keySeed % 1e9;
            s = PaymentSpec.sign(g.key, PaymentSpec.claimDigest(address(payment), chainid, id, c.amount, usage));
        } else if (mode == 5) {
            // The right key, another contract.
            // forge-lint: disable-next-line(unsafe-typecast) -- any address will do
            address other = address(uint160(keySeed));
            if (other == address(payment)) other = address(this);
            s = PaymentSpec.sign(g.key, PaymentSpec.claimDigest(other, block.chainid, id, c.amount, usage));
        } else if (mode == 6) {
            // The enclave's own signature malleated to its high-s twin (n - s, other parity), as
            // far as the compact form can carry it.
            (uint8 v, bytes32 r, bytes32 low) = vm.sign(g.key, _digest(id, c.amount, usage));
            uint256 twin = (SECP256K1_N - uint256(low)) & PaymentSpec.S_MASK;
            s = CompactSignature(r, bytes32((v == 27 ? PaymentSpec.PARITY_BIT : 0) | twin));
        } else if (mode == 7) {
            // The enclave's r with any s above n/2.
            s = PaymentSpec.sign(g.key, _digest(id, c.amount, usage));
            uint256 high = bound(uint256(junkVs), PaymentSpec.HALF_N + 1, PaymentSpec.S_MASK);
            s.vs = bytes32((uint256(s.vs) & PaymentSpec.PARITY_BIT) | high);
        } else if (mode == 8) {
            // The enclave's own signature with the recovery bit flipped.
            s = PaymentSpec.flipParity(PaymentSpec.sign(g.key, _digest(id, c.amount, usage)));
        } else if (mode == 9) {
            // Junk.
            s = CompactSignature(junkR, junkVs);
        } else if (mode == 10) {
            // Replay the last successful claim exactly (possibly on another channel).
            if (!_hasLastClaim) return;
            c = _lastClaim;
            amountValid = false;
        } else {
            // The last successful claim's signature with a higher amount.
            if (!_hasLastClaim) return;
            c = _lastClaim;
            c.amount += 1 + keySeed % 1e18;
            amountValid = false;
        }
        if (mode < 10) (c.r, c.vs) = (s.r, s.vs);
        uint256 before = token.balanceOf(c.provider);
        address sender = _sender(senderSeed, c);

        vm.prank(sender);
        bytes4 outcome;
        try payment.claim(c.publisher, c.provider, c.podId, c.amount, c.usage, c.r, c.vs) {}
        catch (bytes memory err) {
            outcome = _selector(err);
        }
        if (outcome == OK) {
            forgedSuccesses++;
            _unexpected("forged claim accepted");
        } else if (amountValid && outcome != Payment.InvalidSignature.selector) {
            _unexpected("forged claim: expected InvalidSignature");
        }
        if (token.balanceOf(c.provider) != before) _unexpected("forged claim moved money");
        reverted["claimForged"]++;
    }

    function requestUnlock(uint256 chSeed) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];

        bytes4 expected = OK;
        if (g.closed) expected = Payment.ChannelIsClosed.selector;
        else if (g.unlockAt != 0) expected = Payment.UnlockAlreadyRequested.selector;

        vm.prank(publishers[g.publisher]);
        bytes4 outcome;
        try payment.requestUnlock(providers[g.provider], g.podId) {}
        catch (bytes memory err) {
            outcome = _selector(err);
        }
        if (_check("requestUnlock", expected, outcome) && outcome == OK) {
            g.unlockAt = block.timestamp + g.delay;
        }
    }

    /// The provider releases a channel (waives the rest of the unlock delay), mostly; sometimes
    /// the publisher, another provider or a random sender tries. Release takes msg.sender as the
    /// provider, so those address the channel (publisher, sender, pod id): usually none, but
    /// another provider may have a channel of its own there, which it then releases.
    function release(uint256 chSeed, uint256 senderSeed) external {
        if (ids.length == 0) return;
        Ghost storage g = _ghost[ids[chSeed % ids.length]];
        address pub = publishers[g.publisher];
        uint256 k = senderSeed % 8;
        address sender;
        if (k < 5) sender = providers[g.provider];
        else if (k == 5) sender = providers[(senderSeed >> 8) % providers.length];
        else if (k == 6) sender = pub;
        else sender = _randomSender(senderSeed);
        bytes32 target = keccak256(abi.encode(pub, sender, g.podId));
        Ghost storage t = _ghost[target];

        bytes4 expected = OK;
        if (t.key == 0) expected = Payment.ChannelNotFound.selector;
        else if (t.closed) expected = Payment.ChannelIsClosed.selector;

        vm.prank(sender);
        bytes4 outcome;
        try payment.release(pub, g.podId) {}
        catch (bytes memory err) {
            outcome = _selector(err);
            if (
                outcome == Payment.ChannelNotFound.selector
                    && keccak256(err) != keccak256(abi.encodeWithSelector(Payment.ChannelNotFound.selector, target))
            ) _unexpected("release: ChannelNotFound names another channel");
        }
        if (_check("release", expected, outcome) && outcome == OK) {
            // Only ever brought forward, to now.
            // forge-lint: disable-next-line(block-timestamp) -- the model mirrors Payment's check
            if (t.unlockAt == 0 || t.unlockAt > block.timestamp) t.unlockAt = block.timestamp;
        }
    }

    function withdrawUnlocked(uint256 chSeed, uint256 armSeed, uint256 signerSeed) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];
        uint256 owed = _deposited(g) - g.claims;
        address pub = publishers[g.publisher];
        (address signer, bool wrong) = _signer(g, signerSeed);

        bytes4 expected = OK;
        if (wrong) expected = Payment.WrongEnclaveSigner.selector;
        else if (g.closed) expected = Payment.ChannelIsClosed.selector;
        else if (g.unlockAt == 0) expected = Payment.UnlockNotRequested.selector;
        // forge-lint: disable-next-line(block-timestamp) -- the model mirrors Payment's check
        else if (block.timestamp < g.unlockAt) expected = Payment.UnlockPending.selector;
        else if (owed == 0) expected = Payment.NothingToWithdraw.selector;

        uint256 before = token.balanceOf(pub);
        _arm(armSeed);
        vm.prank(pub);
        bytes4 outcome;
        try payment.withdrawUnlocked(providers[g.provider], g.podId, signer) {}
        catch (bytes memory err) {
            outcome = _selector(err);
            _checkWrongSigner("withdrawUnlocked", err, id, signer, g);
        }
        _disarm();
        if (_check("withdrawUnlocked", expected, outcome) && outcome == OK) {
            uint256 got = _gain(pub, before);
            if (got != owed) withdrawMismatches++;
            g.withdrawn += got; // the unlock stays requested
            withdrawnTo[pub] += got;
        }
    }

    function close(uint256 chSeed, uint256 armSeed, uint256 signerSeed) external {
        if (ids.length == 0) return;
        bytes32 id = ids[chSeed % ids.length];
        Ghost storage g = _ghost[id];
        uint256 owed = _deposited(g) - g.claims;
        address pub = publishers[g.publisher];
        (address signer, bool wrong) = _signer(g, signerSeed);

        bytes4 expected = OK;
        if (wrong) expected = Payment.WrongEnclaveSigner.selector;
        else if (g.closed) expected = Payment.ChannelIsClosed.selector;
        else if (owed != 0 && g.unlockAt == 0) expected = Payment.UnlockNotRequested.selector;
        // forge-lint: disable-next-line(block-timestamp) -- the model mirrors Payment's check
        else if (owed != 0 && block.timestamp < g.unlockAt) expected = Payment.UnlockPending.selector;

        uint256 before = token.balanceOf(pub);
        _arm(armSeed);
        vm.prank(pub);
        bytes4 outcome;
        try payment.close(providers[g.provider], g.podId, signer) {}
        catch (bytes memory err) {
            outcome = _selector(err);
            _checkWrongSigner("close", err, id, signer, g);
        }
        _disarm();
        if (_check("close", expected, outcome) && outcome == OK) {
            uint256 got = _gain(pub, before);
            if (got != owed) withdrawMismatches++;
            g.withdrawn += got;
            g.closed = true; // the tombstone keeps its unlock time
            withdrawnTo[pub] += got;
        }
    }

    /// Someone other than the publisher tries the publisher's calls with a channel's provider, pod
    /// id and enclave signer. The channel id includes msg.sender, so these address the sender's own,
    /// non-existent channel.
    function impersonate(uint256 senderSeed, uint256 chSeed, uint256 op, uint256 amount) external {
        if (ids.length == 0) return;
        Ghost storage g = _ghost[ids[chSeed % ids.length]];
        address sender = (op & 4) == 0 ? _randomSender(senderSeed) : providers[g.provider];
        address provider = providers[g.provider];
        amount = bound(amount, 1, 1e24);
        bytes32 ownId = keccak256(abi.encode(sender, provider, g.podId));
        address signer = vm.addr(g.key);
        bytes memory call;
        op = op % 4;
        if (op == 0) call = abi.encodeCall(Payment.deposit, (provider, g.podId, signer, amount));
        else if (op == 1) call = abi.encodeCall(Payment.requestUnlock, (provider, g.podId));
        else if (op == 2) call = abi.encodeCall(Payment.withdrawUnlocked, (provider, g.podId, signer));
        else call = abi.encodeCall(Payment.close, (provider, g.podId, signer));

        vm.prank(sender);
        (bool ok, bytes memory err) = address(payment).call(call);
        if (ok) {
            _unexpected("impersonation succeeded");
        } else if (keccak256(err) != keccak256(abi.encodeWithSelector(Payment.ChannelNotFound.selector, ownId))) {
            _unexpected("impersonation: expected ChannelNotFound");
        }
        reverted["impersonate"]++;
    }

    function warp(uint256 seconds_) external {
        vm.warp(block.timestamp + bound(seconds_, 0, 2 days));
    }

    // =============================================================================================
    // views for the invariants
    // =============================================================================================

    function idsLength() external view returns (uint256) {
        return ids.length;
    }

    function ghost(bytes32 id) external view returns (Ghost memory) {
        return _ghost[id];
    }

    function enclaveKey(uint256 i) external view returns (uint256) {
        return enclaveKeys[i];
    }

    function publishersLength() external view returns (uint256) {
        return publishers.length;
    }

    function providersLength() external view returns (uint256) {
        return providers.length;
    }

    // =============================================================================================
    // internals
    // =============================================================================================

    function _deposited(Ghost storage g) private view returns (uint256) {
        return g.deposits - g.withdrawn;
    }

    function _allowed(Ghost storage g) private view returns (uint256) {
        return g.maxRate == 0 ? type(uint256).max : g.maxRate * (block.timestamp - g.createdAt);
    }

    function _cap(Ghost storage g) private view returns (uint256) {
        uint256 d = _deposited(g);
        uint256 a = _allowed(g);
        return d < a ? d : a;
    }

    /// The enclave signer a publisher call names: the recorded one seven times in eight, otherwise
    /// another known enclave's, zero, or a random address (never the recorded one).
    function _signer(Ghost storage g, uint256 seed) private view returns (address signer, bool wrong) {
        address recorded = vm.addr(g.key);
        if (seed % 8 != 0) return (recorded, false);
        uint256 kind = (seed >> 8) % 3;
        if (kind == 0) signer = vm.addr(enclaveKeys[(seed >> 16) % enclaveKeys.length]);
        else if (kind == 1) signer = address(0);
        else signer = _randomSender(seed);
        return (signer, signer != recorded);
    }

    /// A WrongEnclaveSigner must name the channel, the signer given and the recorded one.
    function _checkWrongSigner(string memory what, bytes memory err, bytes32 id, address signer, Ghost storage g)
        private
    {
        if (_selector(err) != Payment.WrongEnclaveSigner.selector) return;
        wrongSignerCalls++;
        bytes memory want = abi.encodeWithSelector(Payment.WrongEnclaveSigner.selector, id, signer, vm.addr(g.key));
        if (keccak256(err) != keccak256(want)) _unexpected(string.concat(what, ": WrongEnclaveSigner arguments"));
    }

    function _claimAmount(Ghost storage g, uint256 seed) private view returns (uint256) {
        uint256 cap = _cap(g);
        if (seed % 5 != 0 && cap > g.claims) return bound(seed, g.claims + 1, cap);
        return bound(seed, 0, _deposited(g) + 1e18);
    }

    /// Spend caps: none a third of the time, sometimes near the uint128 limit, otherwise up to 1e20.
    function _rate(uint256 seed) private pure returns (uint128) {
        if (seed % 3 == 0) return 0;
        if (seed % 11 == 1) return uint128(bound(seed >> 8, type(uint128).max - 1e20, type(uint128).max));
        return uint128(bound(seed >> 8, 1, 1e20));
    }

    /// Amounts: zero sometimes, around the uint104 limit sometimes, otherwise up to 1e24.
    function _amount(uint256 seed) private pure returns (uint256) {
        uint256 kind = seed % 32;
        if (kind == 0) return 0;
        if (kind == 1) return bound(seed, MAX_AMOUNT - 1e24, MAX_AMOUNT + 1e24);
        return bound(seed >> 8, 1, 1e24);
    }

    /// Anyone may send a claim: mostly random addresses, sometimes the provider or the publisher.
    function _sender(uint256 seed, ClaimCall memory c) private pure returns (address) {
        uint256 k = seed % 12;
        if (k < 8) return _randomSender(seed);
        if (k < 11) return c.provider;
        return c.publisher;
    }

    function _randomSender(uint256 seed) private pure returns (address) {
        return address(uint160(uint256(keccak256(abi.encode("sender", seed)))));
    }

    function _digest(bytes32 id, uint256 cumulative, bytes32 usage) private view returns (bytes32) {
        return PaymentSpec.claimDigest(address(payment), block.chainid, id, cumulative, usage);
    }

    function _gain(address who, uint256 before) private returns (uint256) {
        uint256 now_ = token.balanceOf(who);
        if (now_ < before) {
            _unexpected("balance went down");
            return 0;
        }
        return now_ - before;
    }

    function _mint(address to, uint256 amount) private {
        token.mint(to, amount);
        minted[to] += amount;
    }

    function _selector(bytes memory err) private pure returns (bytes4) {
        // forge-lint: disable-next-line(unsafe-typecast) -- the selector: the first 4 bytes
        return err.length >= 4 ? bytes4(err) : EMPTY_REVERT;
    }

    function _check(string memory what, bytes4 expected, bytes4 outcome) private returns (bool) {
        if (outcome == OK) succeeded[what]++;
        else reverted[what]++;
        if (expected == outcome) return true;
        _unexpected(string.concat(what, ": expected ", _hex4(expected), " got ", _hex4(outcome)));
        return false;
    }

    function _unexpected(string memory what) private {
        if (unexpected == 0) firstUnexpected = what;
        unexpected++;
    }

    /// Arms the re-entrant token (if that is the token) with a call back into Payment.
    function _arm(uint256 seed) private {
        if (address(evil) == address(0)) return;
        uint256 kind = seed % 8;
        if (kind == 0) return;
        address provider = providers[(seed >> 8) % providers.length];
        bytes32 pod = pods[(seed >> 16) % pods.length];
        address signer = vm.addr(enclaveKeys[(seed >> 40) % enclaveKeys.length]);
        bytes memory payload;
        if (kind == 1) {
            payload = abi.encodeCall(Payment.deposit, (provider, pod, signer, 1));
        } else if (kind == 2 && _hasLastClaim) {
            ClaimCall memory c = _lastClaim; // a replay
            payload = abi.encodeCall(Payment.claim, (c.publisher, c.provider, c.podId, c.amount, c.usage, c.r, c.vs));
        } else if (kind == 3 && ids.length != 0) {
            // A fresh, valid claim: would pay the provider legitimately, but not from inside.
            bytes32 id = ids[(seed >> 24) % ids.length];
            Ghost storage g = _ghost[id];
            uint256 amount = g.claims + 1;
            CompactSignature memory s = PaymentSpec.sign(g.key, _digest(id, amount, bytes32(0)));
            payload = abi.encodeCall(
                Payment.claim, (publishers[g.publisher], providers[g.provider], g.podId, amount, bytes32(0), s.r, s.vs)
            );
        } else if (kind == 4) {
            payload = abi.encodeCall(Payment.withdrawUnlocked, (provider, pod, signer));
        } else if (kind == 5) {
            payload = abi.encodeCall(Payment.close, (provider, pod, signer));
        } else {
            payload = abi.encodeCall(Payment.create, (provider, pod, vm.addr(enclaveKeys[0]), 1, 0, 0));
        }
        evil.arm(address(payment), payload, (seed & (1 << 32)) != 0);
    }

    function _disarm() private {
        if (address(evil) != address(0)) evil.disarm();
    }

    function _hex4(bytes4 b) private pure returns (string memory) {
        bytes memory digits = "0123456789abcdef";
        bytes memory out = new bytes(10);
        out[0] = "0";
        out[1] = "x";
        for (uint256 i; i < 4; ++i) {
            out[2 + 2 * i] = digits[uint8(b[i]) >> 4];
            out[3 + 2 * i] = digits[uint8(b[i]) & 15];
        }
        return string(out);
    }
}
