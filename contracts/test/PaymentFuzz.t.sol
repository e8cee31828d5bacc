// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Payment} from "../src/Payment.sol";
import {CompactSignature, PaymentFixture, PaymentLayout, PaymentSpec} from "./utils/PaymentFixture.sol";

/// @notice Property tests over amounts, delays, rates, timestamps and claim sequences
/// (foundry.toml: 1,024 runs each).
contract PaymentFuzzTest is PaymentFixture {
    event Transfer(address indexed from, address indexed to, uint256 value);

    uint256 internal constant MAX_TS = type(uint40).max - type(uint32).max;

    function setUp() public {
        _deploy();
    }

    function testFuzz_create_storesEverything(
        uint256 amount,
        uint32 delay,
        uint128 maxRate,
        uint256 timestamp,
        bytes32 podId,
        address provider,
        address signer
    ) public {
        vm.assume(provider != address(0) && signer != address(0));
        amount = bound(amount, 1, MAX_AMOUNT);
        timestamp = bound(timestamp, 0, MAX_TS);
        vm.warp(timestamp);
        token.mint(PUBLISHER, amount);
        uint256 publisherBefore = token.balanceOf(PUBLISHER);

        vm.prank(PUBLISHER);
        bytes32 id = payment.create(provider, podId, signer, amount, delay, maxRate);

        assertEq(id, keccak256(abi.encode(PUBLISHER, provider, podId)), "id");
        Payment.ChannelView memory ch = payment.getChannel(id);
        assertEq(ch.enclaveSigner, signer, "signer");
        assertEq(ch.unlockAt, 0, "unlockAt");
        assertFalse(ch.closed, "closed");
        assertEq(ch.deposited, amount, "deposited");
        assertEq(ch.claimed, 0, "claimed");
        assertEq(ch.unlockDelay, delay, "delay");
        assertEq(ch.maxRate, maxRate, "maxRate");
        assertEq(ch.createdAt, maxRate == 0 ? 0 : timestamp, "createdAt");
        // The slots, as laid out: the cap record exists only for capped channels, and the CAPPED
        // flag says so in the Balance slot.
        uint256 flags = PaymentLayout.EXISTS | (maxRate == 0 ? 0 : PaymentLayout.CAPPED);
        assertEq(
            vm.load(address(payment), PaymentLayout.channelSlot(id)),
            PaymentLayout.packChannel(signer, delay),
            "channel slot"
        );
        assertEq(
            vm.load(address(payment), PaymentLayout.balanceSlot(id, signer)),
            PaymentLayout.packBalance(amount, 0, 0, flags),
            "balance slot"
        );
        assertEq(
            vm.load(address(payment), PaymentLayout.capSlot(id)),
            maxRate == 0 ? bytes32(0) : PaymentLayout.packCap(maxRate, timestamp),
            "cap slot"
        );
        assertEq(publisherBefore - token.balanceOf(PUBLISHER), amount, "pulled");
        assertEq(token.balanceOf(address(payment)), amount, "held");
    }

    function testFuzz_create_refusesOversizedAmounts(uint256 amount) public {
        amount = bound(amount, MAX_AMOUNT + 1, type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(Payment.AmountTooLarge.selector, amount));
        vm.prank(PUBLISHER);
        payment.create(PROVIDER, POD, enclave, amount, DELAY, 0);
    }

    function testFuzz_deposit_accumulatesOrRefusesOverflow(uint256 first, uint256 second, uint256 third) public {
        first = bound(first, 1, MAX_AMOUNT);
        second = bound(second, 1, MAX_AMOUNT);
        third = bound(third, 1, MAX_AMOUNT);
        token.mint(PUBLISHER, first);
        bytes32 id = _create(first);
        uint256 total = first;
        uint256[2] memory more = [second, third];
        for (uint256 i; i < 2; ++i) {
            uint256 amount = more[i];
            if (total + amount > MAX_AMOUNT) {
                vm.expectRevert(abi.encodeWithSelector(Payment.AmountTooLarge.selector, amount));
                vm.prank(PUBLISHER);
                payment.deposit(PROVIDER, POD, enclave, amount);
            } else {
                token.mint(PUBLISHER, amount);
                total += amount;
                vm.expectEmit(true, true, true, true, address(payment));
                emit Payment.Deposited(PUBLISHER, PROVIDER, id, amount, total);
                vm.prank(PUBLISHER);
                payment.deposit(PROVIDER, POD, enclave, amount);
            }
        }
        assertEq(payment.getChannel(id).deposited, total, "deposited");
        assertEq(token.balanceOf(address(payment)), total, "held");
    }

    /// A sequence of claims with random cumulative amounts (some not increasing, some too high),
    /// each sent by a random sender: the provider ends with exactly the highest valid amount.
    function testFuzz_claim_sequence(uint256 deposit, uint256[8] memory amounts, address[8] memory senders) public {
        deposit = bound(deposit, 1, MAX_AMOUNT);
        token.mint(PUBLISHER, deposit);
        bytes32 id = _create(deposit);
        uint256 claimed;
        for (uint256 i; i < amounts.length; ++i) {
            // Mostly around the current claim, sometimes anywhere up to past the deposit.
            uint256 cumulative =
                i % 3 == 2 ? bound(amounts[i], 0, deposit + 1) : bound(amounts[i], claimed / 2, deposit);
            bytes32 usage = keccak256(abi.encode(i, cumulative));
            CompactSignature memory s = _sign(ENCLAVE_KEY, id, cumulative, usage);
            if (cumulative <= claimed) {
                vm.expectRevert(abi.encodeWithSelector(Payment.ClaimNotIncreasing.selector, cumulative, claimed));
            } else if (cumulative > deposit) {
                vm.expectRevert(abi.encodeWithSelector(Payment.ClaimExceedsDeposit.selector, cumulative, deposit));
            } else {
                vm.expectEmit(true, true, true, true, address(payment));
                emit Payment.Claimed(PUBLISHER, PROVIDER, id, cumulative, usage);
                vm.expectEmit(true, true, true, true, address(token));
                emit Transfer(address(payment), PROVIDER, cumulative - claimed);
                claimed = cumulative;
            }
            vm.prank(senders[i] == address(vm) ? STRANGER : senders[i]);
            _claimWith(cumulative, usage, s);
            assertEq(token.balanceOf(PROVIDER), claimed, "provider holds the cumulative claim");
            assertEq(payment.unclaimed(id), deposit - claimed, "unclaimed");
        }
        assertEq(payment.getChannel(id).claimed, claimed, "claimed");
        assertEq(token.balanceOf(address(payment)), deposit - claimed, "held");
    }

    function testFuzz_claim_rateCap(uint128 rate, uint256 elapsed, uint256 cumulative, uint256 deposit) public {
        rate = uint128(bound(rate, 1, type(uint128).max));
        elapsed = bound(elapsed, 0, 10 * 365 days);
        deposit = bound(deposit, 1, MAX_AMOUNT);
        cumulative = bound(cumulative, 1, deposit);
        token.mint(PUBLISHER, deposit);
        bytes32 id = _create(deposit, DELAY, rate);
        vm.warp(START + elapsed);
        uint256 allowed = uint256(rate) * elapsed;
        CompactSignature memory s = _sign(ENCLAVE_KEY, id, cumulative, bytes32(0));
        if (cumulative > allowed) {
            vm.expectRevert(abi.encodeWithSelector(Payment.ClaimExceedsRate.selector, cumulative, allowed));
        }
        _claimWith(cumulative, bytes32(0), s);
        assertEq(payment.getChannel(id).claimed, cumulative > allowed ? 0 : cumulative, "claimed");
        assertLe(payment.getChannel(id).claimed, allowed, "never above rate * time");
    }

    /// Claims spread over time never exceed rate * (time since creation), whatever the steps.
    function testFuzz_claim_rateCapOverTime(uint128 rate, uint32[6] memory steps, uint256[6] memory asks) public {
        // Up to 1e23 a second: six 30-day steps allow at most ~1.6e30, well inside the uint104 deposit,
        // so every refused ask is refused for the rate.
        rate = uint128(bound(rate, 1, 1e23));
        uint256 deposit = MAX_AMOUNT;
        token.mint(PUBLISHER, deposit);
        bytes32 id = _create(deposit, DELAY, rate);
        uint256 claimed;
        uint256 t = START;
        for (uint256 i; i < steps.length; ++i) {
            t += bound(steps[i], 0, 30 days);
            vm.warp(t);
            uint256 allowed = uint256(rate) * (t - START);
            uint256 ask = bound(asks[i], claimed + 1, claimed + 2 * uint256(rate) * 30 days + 1);
            CompactSignature memory s = _sign(ENCLAVE_KEY, id, ask, bytes32(i));
            if (ask > allowed) {
                vm.expectRevert(abi.encodeWithSelector(Payment.ClaimExceedsRate.selector, ask, allowed));
            } else {
                claimed = ask;
            }
            _claimWith(ask, bytes32(i), s);
            assertLe(payment.getChannel(id).claimed, allowed, "rate cap");
            assertEq(payment.getChannel(id).claimed, claimed, "claimed");
        }
    }

    function testFuzz_unlock_delayAndWithdrawal(
        uint32 delay,
        uint256 createdAt,
        uint256 requestAfter,
        uint256 wait,
        uint256 deposit,
        uint256 claimDuringDelay
    ) public {
        createdAt = bound(createdAt, 1, MAX_TS / 2);
        requestAfter = bound(requestAfter, 0, MAX_TS / 4);
        deposit = bound(deposit, 1, MAX_AMOUNT);
        claimDuringDelay = bound(claimDuringDelay, 0, deposit);
        wait = bound(wait, 0, uint256(delay) + 10);
        vm.warp(createdAt);
        token.mint(PUBLISHER, deposit);
        bytes32 id = _create(deposit, delay, 0);

        uint256 requestedAt = createdAt + requestAfter;
        vm.warp(requestedAt);
        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.UnlockRequested(PUBLISHER, PROVIDER, id, requestedAt + delay);
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        assertEq(payment.getChannel(id).unlockAt, requestedAt + delay, "unlockAt");

        // The provider makes its final claim during the delay.
        if (claimDuringDelay != 0) {
            _claimWith(claimDuringDelay, bytes32(0), _sign(ENCLAVE_KEY, id, claimDuringDelay, bytes32(0)));
        }

        vm.warp(requestedAt + wait);
        uint256 before = token.balanceOf(PUBLISHER);
        if (wait < delay) {
            vm.expectRevert(abi.encodeWithSelector(Payment.UnlockPending.selector, requestedAt + delay));
        } else if (claimDuringDelay == deposit) {
            vm.expectRevert(Payment.NothingToWithdraw.selector);
        } else {
            vm.expectEmit(true, true, true, true, address(payment));
            emit Payment.Withdrawn(PUBLISHER, PROVIDER, id, deposit - claimDuringDelay);
        }
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);
        bool withdrew = wait >= delay && claimDuringDelay != deposit;
        assertEq(token.balanceOf(PUBLISHER) - before, withdrew ? deposit - claimDuringDelay : 0, "withdrawn");
        assertEq(token.balanceOf(PROVIDER), claimDuringDelay, "provider");
        assertEq(token.balanceOf(address(payment)), withdrew ? 0 : deposit - claimDuringDelay, "payment keeps the rest");

        // Whatever happened, the unlock stays requested; once it has passed there is nothing more.
        assertEq(payment.getChannel(id).unlockAt, requestedAt + delay, "unlock still requested");
        vm.expectRevert(abi.encodeWithSelector(Payment.UnlockAlreadyRequested.selector, requestedAt + delay));
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        if (withdrew) {
            vm.expectRevert(Payment.NothingToWithdraw.selector);
            vm.prank(PUBLISHER);
            payment.withdrawUnlocked(PROVIDER, POD, enclave);
        }
    }

    /// After a withdrawal the unlock stays requested, at any later time, until a deposit of any
    /// amount cancels it; then the new funds are locked until a new unlock has passed.
    function testFuzz_withdrawUnlocked_unlockStaysRequestedUntilADeposit(
        uint32 delay,
        uint256 deposit,
        uint256 claimed,
        uint256 later,
        uint256 more
    ) public {
        deposit = bound(deposit, 1, MAX_AMOUNT / 2);
        claimed = bound(claimed, 0, deposit - 1);
        later = bound(later, 0, 10 * 365 days);
        more = bound(more, 1, MAX_AMOUNT / 2);
        token.mint(PUBLISHER, deposit + more);
        bytes32 id = _create(deposit, delay, 0);
        if (claimed != 0) _claimWith(claimed, bytes32(0), _sign(ENCLAVE_KEY, id, claimed, bytes32(0)));
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        uint256 unlockAt = START + delay;
        vm.warp(unlockAt);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);

        vm.warp(unlockAt + later);
        _assertChannel(id, enclave, unlockAt, false, claimed, claimed, delay);
        vm.expectRevert(Payment.NothingToWithdraw.selector);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);
        vm.expectRevert(abi.encodeWithSelector(Payment.UnlockAlreadyRequested.selector, unlockAt));
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);

        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.UnlockCancelled(PUBLISHER, PROVIDER, id);
        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.Deposited(PUBLISHER, PROVIDER, id, more, claimed + more);
        vm.prank(PUBLISHER);
        payment.deposit(PROVIDER, POD, enclave, more);
        _assertChannel(id, enclave, 0, false, claimed + more, claimed, delay);
        vm.expectRevert(Payment.UnlockNotRequested.selector);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);
        assertEq(token.balanceOf(address(payment)), more, "the new funds are locked");
    }

    function testFuzz_deposit_cancelsUnlockAtAnyTime(uint32 delay, uint256 wait, uint256 amount) public {
        amount = bound(amount, 1, 1e30);
        wait = bound(wait, 0, 2 * uint256(delay) + 1);
        bytes32 id = _create(1e18, delay, 0);
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        vm.warp(START + wait);
        token.mint(PUBLISHER, amount);
        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.UnlockCancelled(PUBLISHER, PROVIDER, id);
        vm.prank(PUBLISHER);
        payment.deposit(PROVIDER, POD, enclave, amount);
        assertEq(payment.getChannel(id).unlockAt, 0, "cancelled");
        vm.expectRevert(Payment.UnlockNotRequested.selector);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);
    }

    /// Only the provider's release changes the channel: any other sender, naming any publisher,
    /// addresses a channel that does not exist and leaves every slot as it was. The provider's
    /// own release only ever brings the unlock forward, to now.
    function testFuzz_release_onlyTheProvidersChangesTheChannel(
        address sender,
        address namedPublisher,
        uint256 claimed,
        uint32 delay,
        uint256 requestAfter,
        uint256 releaseAfter,
        bool requested
    ) public {
        vm.assume(sender != PROVIDER && sender != address(vm));
        claimed = bound(claimed, 0, 10e18);
        requestAfter = bound(requestAfter, 0, 30 days);
        releaseAfter = bound(releaseAfter, 0, 30 days);
        bytes32 id = _create(10e18, delay, 0);
        if (claimed != 0) _claimWith(claimed, bytes32(0), _sign(ENCLAVE_KEY, id, claimed, bytes32(0)));
        uint256 unlockAt;
        if (requested) {
            vm.warp(START + requestAfter);
            vm.prank(PUBLISHER);
            payment.requestUnlock(PROVIDER, POD);
            unlockAt = START + requestAfter + delay;
        }
        vm.warp(block.timestamp + releaseAfter);
        bytes32 channel = vm.load(address(payment), PaymentLayout.channelSlot(id));
        bytes32 balance = vm.load(address(payment), PaymentLayout.balanceSlot(id, enclave));

        vm.expectRevert(abi.encodeWithSelector(Payment.ChannelNotFound.selector, _id(PUBLISHER, sender, POD)));
        vm.prank(sender);
        payment.release(PUBLISHER, POD);
        if (namedPublisher != PUBLISHER) {
            // Not even the provider can release a channel it does not have.
            vm.expectRevert(
                abi.encodeWithSelector(Payment.ChannelNotFound.selector, _id(namedPublisher, PROVIDER, POD))
            );
            vm.prank(PROVIDER);
            payment.release(namedPublisher, POD);
        }
        assertEq(vm.load(address(payment), PaymentLayout.channelSlot(id)), channel, "channel slot unchanged");
        assertEq(vm.load(address(payment), PaymentLayout.balanceSlot(id, enclave)), balance, "balance unchanged");

        // forge-lint: disable-next-line(block-timestamp) -- the expectation mirrors Payment's check
        uint256 expected = unlockAt != 0 && unlockAt <= block.timestamp ? unlockAt : block.timestamp;
        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.Released(PUBLISHER, PROVIDER, id, expected);
        vm.prank(PROVIDER);
        payment.release(PUBLISHER, POD);
        _assertChannel(id, enclave, expected, false, 10e18, claimed, delay);
        assertEq(token.balanceOf(address(payment)), 10e18 - claimed, "no money moved");
    }

    /// Deposits, claims before and after the release, then the release (with or without an unlock
    /// requested first) and an immediate withdrawal or close: Payment is left holding exactly
    /// nothing for the channel, the provider has exactly its claims and the publisher exactly the
    /// rest of its deposits.
    function testFuzz_release_thenWithdrawReturnsExactlyTheDeposits(
        uint256 first,
        uint256 second,
        uint256 claimBefore,
        uint256 claimAfter,
        uint32 delay,
        uint256 timestamp,
        bool requestFirst,
        bool close
    ) public {
        first = bound(first, 1, MAX_AMOUNT / 2);
        second = bound(second, 0, MAX_AMOUNT / 2);
        uint256 total = first + second;
        claimBefore = bound(claimBefore, 0, total);
        claimAfter = bound(claimAfter, claimBefore, total);
        // Not at time zero: an unlock time of zero means "no unlock requested".
        timestamp = bound(timestamp, 1, MAX_TS);
        vm.warp(timestamp);
        token.mint(PUBLISHER, total);
        uint256 publisherBefore = token.balanceOf(PUBLISHER);
        bytes32 id = _create(first, delay, 0);
        if (second != 0) {
            vm.prank(PUBLISHER);
            payment.deposit(PROVIDER, POD, enclave, second);
        }
        if (claimBefore != 0) _claimWith(claimBefore, bytes32(0), _sign(ENCLAVE_KEY, id, claimBefore, bytes32(0)));
        if (requestFirst) {
            vm.prank(PUBLISHER);
            payment.requestUnlock(PROVIDER, POD);
        }

        vm.prank(PROVIDER);
        payment.release(PUBLISHER, POD);
        assertEq(payment.getChannel(id).unlockAt, timestamp, "unlocked now");
        // A claim still in flight is honoured until the publisher takes the rest.
        if (claimAfter > claimBefore) {
            _claimWith(claimAfter, bytes32(0), _sign(ENCLAVE_KEY, id, claimAfter, bytes32(0)));
        }

        // No time passes: the release waived the whole delay.
        vm.prank(PUBLISHER);
        if (close) {
            payment.close(PROVIDER, POD, enclave);
        } else if (claimAfter == total) {
            vm.expectRevert(Payment.NothingToWithdraw.selector);
            payment.withdrawUnlocked(PROVIDER, POD, enclave);
        } else {
            payment.withdrawUnlocked(PROVIDER, POD, enclave);
        }

        assertEq(payment.unclaimed(id), 0, "nothing unclaimed");
        assertEq(token.balanceOf(address(payment)), 0, "Payment holds nothing for the channel");
        assertEq(token.balanceOf(PROVIDER), claimAfter, "provider: exactly its claims");
        assertEq(publisherBefore - token.balanceOf(PUBLISHER), claimAfter, "publisher: everything else back");
        assertEq(
            token.balanceOf(PROVIDER) + token.balanceOf(PUBLISHER) - (publisherBefore - total),
            total,
            "publisher + provider received exactly the deposits"
        );
        _assertChannel(id, enclave, timestamp, close, claimAfter, claimAfter, delay);
    }

    function testFuzz_close_refundsExactlyTheUnclaimed(uint256 deposit, uint256 claimed, uint32 delay) public {
        deposit = bound(deposit, 1, MAX_AMOUNT);
        claimed = bound(claimed, 0, deposit);
        token.mint(PUBLISHER, deposit);
        bytes32 id = _create(deposit, delay, 0);
        if (claimed != 0) _claimWith(claimed, bytes32(0), _sign(ENCLAVE_KEY, id, claimed, bytes32(0)));
        if (claimed != deposit) {
            vm.prank(PUBLISHER);
            payment.requestUnlock(PROVIDER, POD);
            vm.warp(START + delay);
        }
        uint256 before = token.balanceOf(PUBLISHER);
        vm.expectEmit(true, true, true, true, address(payment));
        emit Payment.ChannelClosed(PUBLISHER, PROVIDER, id, deposit - claimed);
        vm.prank(PUBLISHER);
        payment.close(PROVIDER, POD, enclave);
        assertEq(token.balanceOf(PUBLISHER) - before, deposit - claimed, "refund");
        assertEq(token.balanceOf(PROVIDER), claimed, "provider");
        assertEq(token.balanceOf(address(payment)), 0, "empty");
        // The tombstone: balanced, closed, and it keeps any unlock time.
        _assertChannel(id, enclave, claimed == deposit ? 0 : START + delay, true, claimed, claimed, delay);

        vm.expectRevert(abi.encodeWithSelector(Payment.ChannelIsClosed.selector, id));
        vm.prank(PUBLISHER);
        payment.create(PROVIDER, POD, enclave, 1, delay, 0);
    }

    function testFuzz_claim_anySenderPaysTheProvider(address sender, uint256 amount) public {
        vm.assume(sender != PROVIDER && sender != address(payment) && sender != address(vm));
        amount = bound(amount, 1, 1e24);
        _create(1e24);
        uint256 senderBefore = token.balanceOf(sender);
        _claim(sender, amount, bytes32(0));
        assertEq(token.balanceOf(PROVIDER), amount, "provider");
        assertEq(token.balanceOf(sender), senderBefore, "sender");
    }

    function testFuzz_claim_wrongKeyRefused(uint256 key, uint256 amount) public {
        key = boundKey(key);
        vm.assume(key != ENCLAVE_KEY);
        amount = bound(amount, 1, 1e18);
        bytes32 id = _create(1e18);
        CompactSignature memory s = _sign(key, id, amount, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(Payment.InvalidSignature.selector, vm.addr(key), enclave));
        _claimWith(amount, bytes32(0), s);
    }

    /// Any key's valid signature with the recovery bit flipped recovers another key: refused.
    function testFuzz_claim_wrongParityRefused(uint256 key, uint256 amount, bytes32 usage) public {
        key = boundKey(key);
        amount = bound(amount, 1, 1e18);
        bytes32 id = _create(1e18);
        bytes32 digest = _digest(id, amount, usage);
        CompactSignature memory s = PaymentSpec.flipParity(_sig(key, digest));
        address recovered = _recover(digest, s);
        assertTrue(recovered != vm.addr(key), "the flipped signature is another key's");
        vm.assume(recovered != enclave);
        vm.expectRevert(abi.encodeWithSelector(Payment.InvalidSignature.selector, recovered, enclave));
        _claimWith(amount, usage, s);
    }

    /// Any s above n/2 is refused before recovery, whatever r and the recovery bit.
    function testFuzz_claim_highSRefused(bytes32 r, uint256 s, bool parity) public {
        s = bound(s, PaymentSpec.HALF_N + 1, PaymentSpec.S_MASK);
        _create(1e18);
        bytes32 vs = bytes32((parity ? PaymentSpec.PARITY_BIT : 0) | s);
        vm.expectRevert(abi.encodeWithSelector(Payment.InvalidSignature.selector, address(0), enclave));
        payment.claim(PUBLISHER, PROVIDER, POD, 1, bytes32(0), r, vs);
    }

    /// A valid signature moved to any other (channel, amount, usage) is refused.
    function testFuzz_claim_signatureBindsEveryField(
        uint256 signedAmount,
        bytes32 signedUsage,
        uint256 usedAmount,
        bytes32 usedUsage,
        bool otherPod
    ) public {
        signedAmount = bound(signedAmount, 1, 1e18);
        usedAmount = bound(usedAmount, 1, 1e18);
        vm.assume(signedAmount != usedAmount || signedUsage != usedUsage || otherPod);
        bytes32 id = _create(1e18);
        bytes32 pod2 = keccak256("pod-2");
        vm.prank(PUBLISHER);
        bytes32 id2 = payment.create(PROVIDER, pod2, enclave, 1e18, DELAY, 0);

        CompactSignature memory s = _sign(ENCLAVE_KEY, otherPod ? id2 : id, signedAmount, signedUsage);
        _expectInvalidSignature(_digest(id, usedAmount, usedUsage), s);
        _claimWith(usedAmount, usedUsage, s);
    }

    /// Random (r, vs) are never a valid signature.
    function testFuzz_claim_randomSignatureRefused(bytes32 r, bytes32 vs) public {
        bytes32 id = _create(1e18);
        CompactSignature memory s = CompactSignature(r, vs);
        bytes32 digest = _digest(id, 1, bytes32(0));
        vm.assume(_recover(digest, s) != enclave);
        _expectInvalidSignature(digest, s);
        _claimWith(1, bytes32(0), s);
    }

    function testFuzz_views_claimDigestMatchesTheSpec(bytes32 id, uint256 cumulative, bytes32 usage, uint64 chainid)
        public
    {
        chainid = uint64(bound(chainid, 1, type(uint64).max));
        vm.chainId(chainid);
        assertEq(payment.claimDigest(id, cumulative, usage), _digest(id, cumulative, usage), "claimDigest");
        assertEq(payment.domainSeparator(), _domain(address(payment), chainid), "domainSeparator");
    }

    function testFuzz_requestUnlock_timestamps(uint256 timestamp, uint32 delay) public {
        timestamp = bound(timestamp, START, MAX_TS);
        bytes32 id = _create(1e18, delay, 0);
        vm.warp(timestamp);
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        assertEq(payment.getChannel(id).unlockAt, timestamp + delay, "unlockAt");
        vm.warp(timestamp + delay);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, enclave);
        assertEq(payment.unclaimed(id), 0, "withdrawn");
    }

    /// deposit, withdrawUnlocked and close refuse any signer but the recorded one, whatever the
    /// channel's state, and change nothing.
    function testFuzz_publisherCalls_refuseAnyOtherSigner(address given, uint8 state, uint256 amount) public {
        vm.assume(given != enclave);
        amount = bound(amount, 1, MAX_AMOUNT);
        bytes32 id = _create(10e18);
        state = state % 4;
        if (state >= 1) _claim(4e18);
        if (state >= 2) _unlockAndWait();
        if (state == 3) {
            vm.prank(PUBLISHER);
            payment.close(PROVIDER, POD, enclave);
        }
        Payment.ChannelView memory before = payment.getChannel(id);
        uint256 held = token.balanceOf(address(payment));
        bytes memory err = abi.encodeWithSelector(Payment.WrongEnclaveSigner.selector, id, given, enclave);

        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.deposit(PROVIDER, POD, given, amount);
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, given);
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.close(PROVIDER, POD, given);

        Payment.ChannelView memory after_ = payment.getChannel(id);
        assertEq(keccak256(abi.encode(after_)), keccak256(abi.encode(before)), "channel unchanged");
        assertEq(token.balanceOf(address(payment)), held, "no money moved");
        assertEq(vm.load(address(payment), PaymentLayout.balanceSlot(id, given)), 0, "no stray balance");
    }

    /// Without a channel, every publisher call is ChannelNotFound, whatever signer it names.
    function testFuzz_publisherCalls_unknownChannelWhateverTheSigner(address given, bytes32 podId) public {
        bytes memory err = abi.encodeWithSelector(Payment.ChannelNotFound.selector, _id(PUBLISHER, PROVIDER, podId));
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.deposit(PROVIDER, podId, given, 1);
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, podId, given);
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.close(PROVIDER, podId, given);
        vm.expectRevert(err);
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, podId);
    }

    /// Any signer may be recorded; the publisher calls then take exactly that one.
    function testFuzz_publisherCalls_takeTheRecordedSigner(uint256 key, uint256 amount) public {
        key = boundKey(key);
        address signer = vm.addr(key);
        amount = bound(amount, 1, 4e23); // twice this is within the publisher's funds
        vm.prank(PUBLISHER);
        bytes32 id = payment.create(PROVIDER, POD, signer, amount, 0, 0);
        vm.prank(PUBLISHER);
        payment.deposit(PROVIDER, POD, signer, amount);
        CompactSignature memory s = _sign(key, id, amount, bytes32(0));
        _claimWith(amount, bytes32(0), s);
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        vm.prank(PUBLISHER);
        payment.withdrawUnlocked(PROVIDER, POD, signer);
        vm.prank(PUBLISHER);
        payment.close(PROVIDER, POD, signer);
        _assertChannel(id, signer, START, true, amount, amount, 0);
        assertEq(token.balanceOf(PROVIDER), amount, "provider");
    }

    function _unlockAndWait() private {
        vm.prank(PUBLISHER);
        payment.requestUnlock(PROVIDER, POD);
        vm.warp(block.timestamp + DELAY);
    }
}
