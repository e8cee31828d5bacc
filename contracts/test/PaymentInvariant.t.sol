// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Payment} from "../src/Payment.sol";
import {MockERC20} from "./utils/MockERC20.sol";
import {PaymentLayout} from "./utils/PaymentFixture.sol";
import {IMintableERC20, PaymentHandler} from "./utils/PaymentHandler.sol";
import {ReentrantToken} from "./utils/ReentrantToken.sol";
import {InvariantBase} from "./utils/TestBase.sol";

/// @notice Payment's invariants under the fuzzed PaymentHandler (foundry.toml: 256 runs x 64 calls
/// = 16,384 calls per invariant). Each invariant also sets fail-on-revert: the handler catches
/// every Payment revert itself, so a handler revert would mean a broken check, not a tolerated
/// outcome.
abstract contract PaymentInvariantBase is InvariantBase {
    /// Revert payload of `probeWithdrawal`: what the publisher would get, and what it should get.
    error ProbeResult(uint256 got, uint256 owed, bytes4 failure);

    Payment internal payment;
    IMintableERC20 internal token;
    PaymentHandler internal handler;

    function _setUp(IMintableERC20 token_, ReentrantToken evil) internal {
        vm.warp(1_700_000_000);
        token = token_;
        payment = new Payment(IERC20(address(token_)));
        handler = new PaymentHandler(payment, token, evil);
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](9);
        selectors[0] = PaymentHandler.create.selector;
        selectors[1] = PaymentHandler.deposit.selector;
        selectors[2] = PaymentHandler.claim.selector;
        selectors[3] = PaymentHandler.claimForged.selector;
        selectors[4] = PaymentHandler.requestUnlock.selector;
        selectors[5] = PaymentHandler.withdrawUnlocked.selector;
        selectors[6] = PaymentHandler.close.selector;
        selectors[7] = PaymentHandler.warp.selector;
        selectors[8] = PaymentHandler.release.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
        bytes4[] memory more = new bytes4[](2);
        more[0] = PaymentHandler.impersonate.selector;
        more[1] = PaymentHandler.claim.selector; // claims twice as likely
        targetSelector(FuzzSelector(address(handler), more));
    }

    /// The handler's model agreed with Payment on every outcome (which call succeeds, which error).
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_modelAgreesWithPayment() public view {
        assertEq(handler.unexpected(), 0, handler.firstUnexpected());
    }

    /// (a) Payment holds exactly the sum over channels of deposited - claimed.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_a_balanceIsSumOfUnclaimed() public view {
        uint256 sum;
        uint256 ghostSum;
        uint256 n = handler.idsLength();
        for (uint256 i; i < n; ++i) {
            bytes32 id = handler.ids(i);
            Payment.ChannelView memory ch = payment.getChannel(id);
            sum += ch.deposited - ch.claimed;
            assertEq(payment.unclaimed(id), ch.deposited - ch.claimed, "unclaimed view");
            PaymentHandler.Ghost memory g = handler.ghost(id);
            ghostSum += g.deposits - g.withdrawn - g.claims;
        }
        assertEq(address(payment.token()), address(token), "the deployment's token");
        assertEq(token.balanceOf(address(payment)), sum, "balance == sum(deposited - claimed)");
        assertEq(sum, ghostSum, "sum matches the ghost ledger");
    }

    /// (b) claimed <= deposited, and claimed <= maxRate * (now - createdAt) when capped; and each
    /// channel's stored state, cap record included (present exactly for capped channels), is what
    /// the model expects.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_b_claimsBounded() public view {
        uint256 n = handler.idsLength();
        for (uint256 i; i < n; ++i) {
            bytes32 id = handler.ids(i);
            Payment.ChannelView memory ch = payment.getChannel(id);
            PaymentHandler.Ghost memory g = handler.ghost(id);
            assertLe(ch.claimed, ch.deposited, "claimed <= deposited");
            if (ch.maxRate != 0) {
                assertLe(ch.claimed, uint256(ch.maxRate) * (block.timestamp - ch.createdAt), "rate cap");
            }
            assertEq(ch.enclaveSigner, vm.addr(g.key), "signer");
            assertEq(ch.maxRate, g.maxRate, "maxRate");
            assertEq(ch.createdAt, g.maxRate == 0 ? 0 : g.createdAt, "createdAt, for capped channels only");
            assertEq(ch.unlockDelay, g.delay, "unlockDelay");
            assertEq(ch.deposited, g.deposits - g.withdrawn, "deposited");
            assertEq(ch.claimed, g.claims, "claimed");
            assertEq(ch.unlockAt, g.unlockAt, "unlockAt");
            assertEq(ch.closed, g.closed, "closed");
            if (ch.closed) assertEq(ch.deposited, ch.claimed, "a closed channel holds nothing");
        }
    }

    /// (f) Storage is laid out as documented: per channel a Channel slot {enclaveSigner,
    /// unlockDelay}, one Balance slot keyed by (id, recorded signer) holding deposited, claimed,
    /// unlockAt and the EXISTS | CLOSED | CAPPED flags, and a Cap slot only for capped channels.
    /// No other known enclave signer ever gets a Balance slot for the channel, whatever wrong
    /// signers publisher calls named.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_f_storageLayout() public view {
        uint256 n = handler.idsLength();
        for (uint256 i; i < n; ++i) {
            bytes32 id = handler.ids(i);
            PaymentHandler.Ghost memory g = handler.ghost(id);
            address signer = vm.addr(g.key);
            uint256 flags = PaymentLayout.EXISTS | (g.closed ? PaymentLayout.CLOSED : 0)
                | (g.maxRate != 0 ? PaymentLayout.CAPPED : 0);
            assertEq(_load(PaymentLayout.channelSlot(id)), PaymentLayout.packChannel(signer, g.delay), "Channel slot");
            assertEq(
                _load(PaymentLayout.balanceSlot(id, signer)),
                PaymentLayout.packBalance(g.deposits - g.withdrawn, g.claims, g.unlockAt, flags),
                "Balance slot"
            );
            assertEq(
                _load(PaymentLayout.capSlot(id)),
                g.maxRate == 0 ? bytes32(0) : PaymentLayout.packCap(g.maxRate, g.createdAt),
                "Cap slot, for capped channels only"
            );
            for (uint256 k; k < 3; ++k) {
                address other = vm.addr(handler.enclaveKey(k));
                if (other != signer) assertEq(_load(PaymentLayout.balanceSlot(id, other)), 0, "no stray Balance");
            }
            assertEq(_load(PaymentLayout.balanceSlot(id, address(0))), 0, "no Balance for signer zero");
        }
    }

    /// (c) Whatever the state, once the delay has passed withdrawUnlocked returns exactly
    /// deposited - claimed (checked by a probe that rolls itself back), and every real
    /// withdrawal or close refund so far did too.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_c_withdrawalReturnsTheUnclaimed() public {
        assertEq(handler.withdrawMismatches(), 0, "a withdrawal returned the wrong amount");
        uint256 n = handler.idsLength();
        for (uint256 i; i < n; ++i) {
            bytes32 id = handler.ids(i);
            if (payment.getChannel(id).closed) continue;
            try this.probeWithdrawal(id) {
                revert("probe did not revert");
            } catch (bytes memory ret) {
                // forge-lint: disable-next-line(unsafe-typecast) -- the selector: the first 4 bytes
                assertEq(bytes4(ret), ProbeResult.selector, "probe failed");
                (uint256 got, uint256 owed, bytes4 failure) = abi.decode(_tail(ret), (uint256, uint256, bytes4));
                if (owed == 0) {
                    assertEq(failure, Payment.NothingToWithdraw.selector, "nothing owed: NothingToWithdraw");
                } else {
                    assertEq(failure, bytes4(0), "withdrawal refused");
                }
                assertEq(got, owed, "withdrawUnlocked returns exactly deposited - claimed");
            }
        }
    }

    /// Requests the unlock if needed, waits out the delay, withdraws as the publisher, then
    /// undoes everything by reverting with the result.
    function probeWithdrawal(bytes32 id) external {
        require(msg.sender == address(this), "internal");
        PaymentHandler.Ghost memory g = handler.ghost(id);
        address publisher = handler.publishers(g.publisher);
        address provider = handler.providers(g.provider);
        uint256 owed = g.deposits - g.withdrawn - g.claims;
        uint256 t0 = vm.getBlockTimestamp();

        if (payment.getChannel(id).unlockAt == 0) {
            vm.prank(publisher);
            payment.requestUnlock(provider, g.podId);
        }
        uint256 unlockAt = payment.getChannel(id).unlockAt;
        if (unlockAt > t0) vm.warp(unlockAt);

        uint256 before = token.balanceOf(publisher);
        bytes4 failure;
        vm.prank(publisher);
        try payment.withdrawUnlocked(provider, g.podId, vm.addr(g.key)) {}
        catch (bytes memory err) {
            // forge-lint: disable-next-line(unsafe-typecast) -- the selector: the first 4 bytes
            failure = bytes4(err);
        }
        uint256 got = token.balanceOf(publisher) - before;
        vm.warp(t0);
        revert ProbeResult(got, owed, failure);
    }

    /// (d) Providers' balances come only from claims signed by their channels' enclave signers.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_d_providersPaidOnlyBySignedClaims() public view {
        assertEq(handler.forgedSuccesses(), 0, "a forged claim paid out");
        uint256 n = handler.providersLength();
        for (uint256 i; i < n; ++i) {
            address provider = handler.providers(i);
            assertEq(token.balanceOf(provider), handler.paidTo(provider), "provider balance == signed payouts");
        }
    }

    /// (e) Only publishers receive withdrawals, each from its own channels; nobody else (senders,
    /// attackers, the token) ever holds a token.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_e_onlyPublishersWithdraw() public view {
        uint256 held = token.balanceOf(address(payment));
        uint256 n = handler.publishersLength();
        for (uint256 i; i < n; ++i) {
            address publisher = handler.publishers(i);
            uint256 balance = token.balanceOf(publisher);
            assertEq(
                balance,
                handler.minted(publisher) - handler.depositedBy(publisher) + handler.withdrawnTo(publisher),
                "publisher balance == minted - deposited + own withdrawals"
            );
            held += balance;
        }
        n = handler.providersLength();
        for (uint256 i; i < n; ++i) {
            held += token.balanceOf(handler.providers(i));
        }
        assertEq(held, token.totalSupply(), "every token is with a publisher, a provider or Payment");
    }

    function _load(bytes32 slot) private view returns (bytes32) {
        return vm.load(address(payment), slot);
    }

    function _tail(bytes memory ret) private pure returns (bytes memory out) {
        out = new bytes(ret.length - 4);
        for (uint256 i; i < out.length; ++i) {
            out[i] = ret[i + 4];
        }
    }
}

contract PaymentInvariantTest is PaymentInvariantBase {
    function setUp() public {
        _setUp(IMintableERC20(address(new MockERC20())), ReentrantToken(address(0)));
    }
}

/// @notice The same invariants with a token that re-enters Payment on every transfer.
contract PaymentReentrantInvariantTest is PaymentInvariantBase {
    ReentrantToken internal evil;

    function setUp() public {
        evil = new ReentrantToken();
        _setUp(IMintableERC20(address(evil)), evil);
    }

    /// Every re-entry was attempted inside a guarded call and refused by the guard.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_reentryRefused() public view {
        assertEq(evil.succeeded(), 0, "a re-entrant call succeeded");
        assertEq(evil.refusedByGuard(), evil.attempts(), "every re-entry refused by ReentrancyGuard");
    }
}
