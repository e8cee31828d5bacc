// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {Registry} from "../src/Registry.sol";
import {Vm} from "./utils/Vm.sol";
import {InvariantBase, TestBase} from "./utils/TestBase.sol";

/// Helpers shared by the Registry tests.
abstract contract RegistryTestBase is TestBase {
    Registry internal registry;

    function assertEqStr(string memory left, string memory right, string memory err) internal pure {
        vm.assertEq(bytes(left), bytes(right), err);
    }

    /// A string of `length` copies of `c`.
    function repeat(bytes1 c, uint256 length) internal pure returns (string memory) {
        bytes memory b = new bytes(length);
        for (uint256 i; i < length; ++i) {
            b[i] = c;
        }
        return string(b);
    }

    /// `count` prices with distinct resources "r0", "r1", ...
    function manyPrices(uint256 count) internal pure returns (Registry.Price[] memory prices) {
        prices = new Registry.Price[](count);
        for (uint256 i; i < count; ++i) {
            prices[i] = Registry.Price(string.concat("r", Strings.toString(i)), i + 1, 2 * i + 1);
        }
    }

    function tableHash(Registry.PricingTable memory table) internal pure returns (bytes32) {
        return keccak256(abi.encode(table));
    }

    function tableHash(IERC20 token, string memory teeType, string memory cpuModel, Registry.Price[] memory prices)
        internal
        pure
        returns (bytes32)
    {
        return tableHash(Registry.PricingTable(token, teeType, cpuModel, prices));
    }
}

/// Every path and every revert, one at a time.
contract RegistryTest is RegistryTestBase {
    IERC20 internal constant TOKEN = IERC20(address(0x70C3));
    address internal constant ALICE = address(0xA11CE);
    address internal constant BOB = address(0xB0B);
    address internal constant CAROL = address(0xCA201);
    string internal constant PROFILE = "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    string internal constant TEE = "sev-snp";
    string internal constant CPU = "AMD EPYC 9654";

    function setUp() public {
        registry = new Registry();
    }

    function prices2() internal pure returns (Registry.Price[] memory prices) {
        prices = new Registry.Price[](2);
        prices[0] = Registry.Price("cpu", 10, 20);
        prices[1] = Registry.Price("memory", 1, 2);
    }

    function registerTable() internal returns (uint256) {
        return registry.registerPricingTable(TOKEN, TEE, CPU, prices2());
    }

    function registerProvider(address provider) internal {
        vm.prank(provider);
        registry.setProfile(PROFILE);
    }

    function subscribe(address provider, uint256 tableId) internal {
        vm.prank(provider);
        registry.subscribe(tableId);
    }

    function assertSubscriptions(address provider, uint256[] memory expected, string memory err) internal view {
        uint256[] memory actual = registry.subscriptionsOf(provider);
        assertEq(actual.length, expected.length, string.concat(err, ": length"));
        for (uint256 i; i < expected.length; ++i) {
            assertEq(actual[i], expected[i], err);
        }
    }

    function ids(uint256 a) internal pure returns (uint256[] memory r) {
        r = new uint256[](1);
        r[0] = a;
    }

    function ids(uint256 a, uint256 b) internal pure returns (uint256[] memory r) {
        r = new uint256[](2);
        (r[0], r[1]) = (a, b);
    }

    function ids(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory r) {
        r = new uint256[](3);
        (r[0], r[1], r[2]) = (a, b, c);
    }

    // --- initial state ---------------------------------------------------------------------------

    function test_constants() public view {
        assertEq(registry.MAX_PRICES(), 32, "MAX_PRICES");
        assertEq(registry.MAX_PROFILE_LENGTH(), 1024, "MAX_PROFILE_LENGTH");
        assertEq(registry.MAX_FIELD_LENGTH(), 128, "MAX_FIELD_LENGTH");
    }

    function test_initialState() public view {
        assertEq(registry.pricingTableCount(), 0, "tableCount");
        assertEqStr(registry.profileOf(ALICE), "", "profile");
        assertEq(registry.subscriptionsOf(ALICE).length, 0, "subscriptions");
        assertFalse(registry.isSubscribed(ALICE, 0), "isSubscribed(0)");
        assertFalse(registry.isSubscribed(ALICE, 1), "isSubscribed(1)");
    }

    // --- registerPricingTable --------------------------------------------------------------------

    function test_registerPricingTable_storesTableAndEmits() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.PricingTableRegistered(1, ALICE, TOKEN, TEE, CPU, prices2());
        vm.prank(ALICE);
        uint256 id = registry.registerPricingTable(TOKEN, TEE, CPU, prices2());

        assertEq(id, 1, "first id");
        assertEq(registry.pricingTableCount(), 1, "tableCount");
        Registry.PricingTable memory t = registry.getPricingTable(1);
        assertEq(address(t.token), address(TOKEN), "token");
        assertEqStr(t.teeType, TEE, "teeType");
        assertEqStr(t.cpuModel, CPU, "cpuModel");
        assertEq(t.prices.length, 2, "prices.length");
        assertEqStr(t.prices[0].resource, "cpu", "prices[0].resource");
        assertEq(t.prices[0].reservation, 10, "prices[0].reservation");
        assertEq(t.prices[0].usage, 20, "prices[0].usage");
        assertEqStr(t.prices[1].resource, "memory", "prices[1].resource");
        assertEq(t.prices[1].reservation, 1, "prices[1].reservation");
        assertEq(t.prices[1].usage, 2, "prices[1].usage");
    }

    function test_registerPricingTable_idsIncreaseByOneAndIdenticalTablesGetNewIds() public {
        assertEq(registerTable(), 1, "id 1");
        vm.prank(BOB);
        assertEq(registerTable(), 2, "id 2");
        IERC20 other = IERC20(address(0x70C4));
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.PricingTableRegistered(3, CAROL, other, "tdx", "", manyPrices(3));
        vm.prank(CAROL);
        assertEq(registry.registerPricingTable(other, "tdx", "", manyPrices(3)), 3, "id 3");
        assertEq(registry.pricingTableCount(), 3, "tableCount");
        assertEq(tableHash(registry.getPricingTable(1)), tableHash(registry.getPricingTable(2)), "1 == 2");
        assertEq(tableHash(registry.getPricingTable(3)), tableHash(other, "tdx", "", manyPrices(3)), "3");
    }

    function test_registerPricingTable_allowsEmptyCpuModelAndZeroAndMaxPrices() public {
        Registry.Price[] memory prices = new Registry.Price[](3);
        prices[0] = Registry.Price("cpu", 0, 0);
        prices[1] = Registry.Price("memory", type(uint256).max, type(uint256).max);
        prices[2] = Registry.Price("CPU", 0, 1); // resources compare byte for byte
        uint256 id = registry.registerPricingTable(TOKEN, TEE, "", prices);
        assertEq(tableHash(registry.getPricingTable(id)), tableHash(TOKEN, TEE, "", prices), "table");
    }

    function test_registerPricingTable_acceptsTheLimits() public {
        string memory long = repeat("x", 128);
        Registry.Price[] memory prices = manyPrices(32);
        prices[31].resource = long;
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.PricingTableRegistered(1, address(this), TOKEN, long, long, prices);
        uint256 id = registry.registerPricingTable(TOKEN, long, long, prices);
        assertEq(tableHash(registry.getPricingTable(id)), tableHash(TOKEN, long, long, prices), "table");
    }

    function test_registerPricingTable_revertsOnZeroToken() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.ZeroAddress.selector));
        registry.registerPricingTable(IERC20(address(0)), TEE, CPU, prices2());
    }

    function test_registerPricingTable_revertsOnEmptyTeeType() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyTeeType.selector));
        registry.registerPricingTable(TOKEN, "", CPU, prices2());
    }

    function test_registerPricingTable_revertsOnLongTeeType() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.TeeTypeTooLong.selector, 129, 128));
        registry.registerPricingTable(TOKEN, repeat("t", 129), CPU, prices2());
    }

    function test_registerPricingTable_revertsOnLongCpuModel() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.CpuModelTooLong.selector, 129, 128));
        registry.registerPricingTable(TOKEN, TEE, repeat("c", 129), prices2());
    }

    function test_registerPricingTable_revertsOnEmptyPrices() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyPrices.selector));
        registry.registerPricingTable(TOKEN, TEE, CPU, new Registry.Price[](0));
    }

    function test_registerPricingTable_revertsOnTooManyPrices() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.TooManyPrices.selector, 33, 32));
        registry.registerPricingTable(TOKEN, TEE, CPU, manyPrices(33));
    }

    function test_registerPricingTable_revertsOnEmptyResource() public {
        Registry.Price[] memory prices = manyPrices(3);
        prices[1].resource = "";
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyResource.selector, 1));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);

        prices = manyPrices(1);
        prices[0].resource = "";
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyResource.selector, 0));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);
    }

    function test_registerPricingTable_revertsOnLongResource() public {
        Registry.Price[] memory prices = manyPrices(4);
        prices[2].resource = repeat("r", 129);
        vm.expectRevert(abi.encodeWithSelector(Registry.ResourceTooLong.selector, 2, 129, 128));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);
    }

    function test_registerPricingTable_revertsOnDuplicateResource() public {
        Registry.Price[] memory prices = prices2();
        prices[1].resource = "cpu"; // adjacent
        vm.expectRevert(abi.encodeWithSelector(Registry.DuplicateResource.selector, "cpu"));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);

        prices = manyPrices(32);
        prices[31].resource = "r0"; // first and last
        vm.expectRevert(abi.encodeWithSelector(Registry.DuplicateResource.selector, "r0"));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);

        prices = manyPrices(5);
        prices[3] = Registry.Price("r1", 99, 99); // same name, other prices
        vm.expectRevert(abi.encodeWithSelector(Registry.DuplicateResource.selector, "r1"));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);
    }

    function test_registerPricingTable_failedRegistrationUsesNoId() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyPrices.selector));
        registry.registerPricingTable(TOKEN, TEE, CPU, new Registry.Price[](0));
        assertEq(registry.pricingTableCount(), 0, "tableCount");
        assertEq(registerTable(), 1, "id");
    }

    function test_getPricingTable_revertsOnUnknownIds() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 1));
        registry.getPricingTable(1);
        registerTable();
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 0));
        registry.getPricingTable(0);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 2));
        registry.getPricingTable(2);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, type(uint256).max));
        registry.getPricingTable(type(uint256).max);
    }

    // --- setProfile --------------------------------------------------------------------------------

    function test_setProfile_registersAndEmits() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.ProviderProfileSet(ALICE, PROFILE);
        registerProvider(ALICE);
        assertEqStr(registry.profileOf(ALICE), PROFILE, "profile");
        assertEqStr(registry.profileOf(BOB), "", "other provider");
    }

    function test_setProfile_updatesAndKeepsSubscriptions() public {
        registerProvider(ALICE);
        subscribe(ALICE, registerTable());
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.ProviderProfileSet(ALICE, "https://alice.example/profile.json");
        vm.prank(ALICE);
        registry.setProfile("https://alice.example/profile.json");
        assertEqStr(registry.profileOf(ALICE), "https://alice.example/profile.json", "profile");
        assertSubscriptions(ALICE, ids(1), "subscriptions");
        // Setting the same profile again is allowed and announced again.
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.ProviderProfileSet(ALICE, "https://alice.example/profile.json");
        vm.prank(ALICE);
        registry.setProfile("https://alice.example/profile.json");
    }

    function test_setProfile_acceptsMaxLength() public {
        string memory uri = repeat("p", 1024);
        vm.prank(ALICE);
        registry.setProfile(uri);
        assertEqStr(registry.profileOf(ALICE), uri, "profile");
    }

    function test_setProfile_revertsOnEmptyProfile() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.EmptyProfile.selector));
        vm.prank(ALICE);
        registry.setProfile("");
    }

    function test_setProfile_revertsOnLongProfile() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.ProfileTooLong.selector, 1025, 1024));
        vm.prank(ALICE);
        registry.setProfile(repeat("p", 1025));
    }

    // --- subscribe ---------------------------------------------------------------------------------

    function test_subscribe_subscribesAndEmits() public {
        registerTable();
        registerTable();
        registerProvider(ALICE);
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Subscribed(ALICE, 2);
        subscribe(ALICE, 2);
        assertTrue(registry.isSubscribed(ALICE, 2), "isSubscribed(2)");
        assertFalse(registry.isSubscribed(ALICE, 1), "isSubscribed(1)");
        assertFalse(registry.isSubscribed(BOB, 2), "other provider");
        assertSubscriptions(ALICE, ids(2), "after first");

        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Subscribed(ALICE, 1);
        subscribe(ALICE, 1);
        assertSubscriptions(ALICE, ids(2, 1), "after second");
    }

    function test_subscribe_providersAreIndependent() public {
        uint256 id = registerTable();
        registerProvider(ALICE);
        registerProvider(BOB);
        subscribe(ALICE, id);
        subscribe(BOB, id);
        vm.prank(ALICE);
        registry.unsubscribe(id);
        assertFalse(registry.isSubscribed(ALICE, id), "alice");
        assertTrue(registry.isSubscribed(BOB, id), "bob");
    }

    function test_subscribe_revertsOnUnknownTable() public {
        registerProvider(ALICE);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 1));
        subscribe(ALICE, 1);
        registerTable();
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 0));
        subscribe(ALICE, 0);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 2));
        subscribe(ALICE, 2);
    }

    function test_subscribe_revertsWithoutProfile() public {
        uint256 id = registerTable();
        vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, ALICE));
        subscribe(ALICE, id);
    }

    function test_subscribe_checksTheTableBeforeTheProvider() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 7));
        subscribe(ALICE, 7);
    }

    function test_subscribe_revertsWhenAlreadySubscribed() public {
        uint256 id = registerTable();
        registerProvider(ALICE);
        subscribe(ALICE, id);
        vm.expectRevert(abi.encodeWithSelector(Registry.AlreadySubscribed.selector, ALICE, id));
        subscribe(ALICE, id);
    }

    // --- unsubscribe -------------------------------------------------------------------------------

    function test_unsubscribe_unsubscribesAndEmits() public {
        registerTable();
        registerTable();
        registerTable();
        registerProvider(ALICE);
        subscribe(ALICE, 1);
        subscribe(ALICE, 2);
        subscribe(ALICE, 3);

        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Unsubscribed(ALICE, 1);
        vm.prank(ALICE);
        registry.unsubscribe(1);
        assertFalse(registry.isSubscribed(ALICE, 1), "isSubscribed(1)");
        assertSubscriptions(ALICE, ids(3, 2), "last moves into the freed place");

        // Unsubscribing keeps the profile, and the provider may subscribe again.
        assertEqStr(registry.profileOf(ALICE), PROFILE, "profile");
        subscribe(ALICE, 1);
        assertSubscriptions(ALICE, ids(3, 2, 1), "resubscribed");
    }

    function test_unsubscribe_revertsOnUnknownTable() public {
        registerProvider(ALICE);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 0));
        vm.prank(ALICE);
        registry.unsubscribe(0);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, 1));
        vm.prank(ALICE);
        registry.unsubscribe(1);
    }

    function test_unsubscribe_revertsWhenNotSubscribed() public {
        uint256 id = registerTable();
        // never registered
        vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, ALICE, id));
        vm.prank(ALICE);
        registry.unsubscribe(id);
        // registered, not subscribed
        registerProvider(ALICE);
        vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, ALICE, id));
        vm.prank(ALICE);
        registry.unsubscribe(id);
        // subscribed by someone else only
        registerProvider(BOB);
        subscribe(BOB, id);
        vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, ALICE, id));
        vm.prank(ALICE);
        registry.unsubscribe(id);
        // twice
        subscribe(ALICE, id);
        vm.prank(ALICE);
        registry.unsubscribe(id);
        vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, ALICE, id));
        vm.prank(ALICE);
        registry.unsubscribe(id);
    }

    // --- removeProvider ----------------------------------------------------------------------------

    function test_removeProvider_withoutSubscriptions() public {
        registerProvider(ALICE);
        vm.recordLogs();
        vm.prank(ALICE);
        registry.removeProvider();
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one log");
        assertEq(logs[0].emitter, address(registry), "emitter");
        assertEq(logs[0].topics.length, 2, "topics");
        assertEq(logs[0].topics[0], Registry.ProviderRemoved.selector, "ProviderRemoved");
        assertEq(logs[0].topics[1], bytes32(uint256(uint160(ALICE))), "provider");
        assertEq(logs[0].data.length, 0, "no data");
        assertEqStr(registry.profileOf(ALICE), "", "profile cleared");
    }

    function test_removeProvider_unsubscribesEverythingThenEmitsRemoved() public {
        for (uint256 i; i < 4; ++i) {
            registerTable();
        }
        registerProvider(ALICE);
        registerProvider(BOB);
        subscribe(ALICE, 3);
        subscribe(ALICE, 1);
        subscribe(ALICE, 4);
        subscribe(BOB, 1);

        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Unsubscribed(ALICE, 3);
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Unsubscribed(ALICE, 1);
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.Unsubscribed(ALICE, 4);
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.ProviderRemoved(ALICE);
        vm.recordLogs();
        vm.prank(ALICE);
        registry.removeProvider();
        assertEq(vm.getRecordedLogs().length, 4, "exactly these four logs");

        assertEqStr(registry.profileOf(ALICE), "", "profile cleared");
        assertEq(registry.subscriptionsOf(ALICE).length, 0, "subscriptions cleared");
        for (uint256 id = 1; id <= 4; ++id) {
            assertFalse(registry.isSubscribed(ALICE, id), "isSubscribed");
        }
        // BOB is untouched.
        assertEqStr(registry.profileOf(BOB), PROFILE, "bob profile");
        assertSubscriptions(BOB, ids(1), "bob subscriptions");
    }

    function test_removeProvider_thenRegisterAgainStartsClean() public {
        uint256 id = registerTable();
        registerProvider(ALICE);
        subscribe(ALICE, id);
        vm.prank(ALICE);
        registry.removeProvider();

        vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, ALICE));
        subscribe(ALICE, id);
        vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, ALICE, id));
        vm.prank(ALICE);
        registry.unsubscribe(id);

        registerProvider(ALICE);
        assertEq(registry.subscriptionsOf(ALICE).length, 0, "no subscriptions carried over");
        subscribe(ALICE, id);
        assertSubscriptions(ALICE, ids(id), "subscribed again");
    }

    function test_removeProvider_revertsWhenNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, ALICE));
        vm.prank(ALICE);
        registry.removeProvider();
        registerProvider(ALICE);
        vm.prank(ALICE);
        registry.removeProvider();
        vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, ALICE));
        vm.prank(ALICE);
        registry.removeProvider();
    }

    // --- fuzz ---------------------------------------------------------------------------------------

    function testFuzz_registerPricingTable_roundTrip(
        address creator,
        address token,
        string calldata teeType,
        string calldata cpuModel,
        uint256 count,
        uint256 seed
    ) public {
        vm.assume(token != address(0));
        vm.assume(bytes(teeType).length != 0 && bytes(teeType).length <= 128 && bytes(cpuModel).length <= 128);
        count = bound(count, 1, 32);
        Registry.Price[] memory prices = new Registry.Price[](count);
        for (uint256 i; i < count; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            // Distinct by construction: the index is part of the name.
            prices[i] = Registry.Price(string.concat(Strings.toString(i), ":", Strings.toHexString(r)), r >> 128, r);
        }
        uint256 before = registry.pricingTableCount();
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.PricingTableRegistered(before + 1, creator, IERC20(token), teeType, cpuModel, prices);
        vm.prank(creator);
        uint256 id = registry.registerPricingTable(IERC20(token), teeType, cpuModel, prices);
        assertEq(id, before + 1, "id");
        assertEq(tableHash(registry.getPricingTable(id)), tableHash(IERC20(token), teeType, cpuModel, prices), "table");
    }

    function testFuzz_registerPricingTable_rejectsAnyDuplicate(uint256 count, uint256 i, uint256 j) public {
        count = bound(count, 2, 32);
        j = bound(j, 1, count - 1);
        i = bound(i, 0, j - 1);
        Registry.Price[] memory prices = manyPrices(count);
        prices[j].resource = prices[i].resource;
        vm.expectRevert(abi.encodeWithSelector(Registry.DuplicateResource.selector, prices[i].resource));
        registry.registerPricingTable(TOKEN, TEE, CPU, prices);
    }

    function testFuzz_registerPricingTable_rejectsTooMany(uint256 count) public {
        count = bound(count, 33, 200);
        vm.expectRevert(abi.encodeWithSelector(Registry.TooManyPrices.selector, count, 32));
        registry.registerPricingTable(TOKEN, TEE, CPU, manyPrices(count));
    }

    function testFuzz_setProfile_roundTrip(address provider, string calldata uri) public {
        vm.assume(bytes(uri).length != 0 && bytes(uri).length <= 1024);
        vm.expectEmit(true, true, true, true, address(registry));
        emit Registry.ProviderProfileSet(provider, uri);
        vm.prank(provider);
        registry.setProfile(uri);
        assertEqStr(registry.profileOf(provider), uri, "profile");
    }

    function testFuzz_setProfile_rejectsLong(uint256 length) public {
        length = bound(length, 1025, 4096);
        vm.expectRevert(abi.encodeWithSelector(Registry.ProfileTooLong.selector, length, 1024));
        vm.prank(ALICE);
        registry.setProfile(repeat("p", length));
    }

    function testFuzz_subscribe_rejectsUnknownTables(uint256 tableId) public {
        registerTable();
        registerTable();
        registerProvider(ALICE);
        vm.assume(tableId == 0 || tableId > 2);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, tableId));
        subscribe(ALICE, tableId);
        vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, tableId));
        vm.prank(ALICE);
        registry.unsubscribe(tableId);
    }
}

/// Drives the registry with random operations, each from a random actor, predicting each
/// outcome (success, or the exact revert) from a model kept alongside.
abstract contract RegistryDriver is RegistryTestBase {
    uint256 internal constant ACTORS = 4;

    // --- the model ---
    uint256 internal mTableCount;
    mapping(uint256 tableId => bytes32) internal mTableHash;
    mapping(uint256 tableId => address) internal mTableCreator;
    mapping(address provider => string) internal mProfile;
    mapping(address provider => mapping(uint256 tableId => bool)) internal mSubscribed;
    mapping(address provider => uint256) internal mSubscriptionCount;

    /// Successful operations by kind: register, setProfile, subscribe, unsubscribe, remove.
    uint256[5] internal successes;
    uint256 internal failures;

    function actor(uint256 i) internal pure returns (address) {
        // forge-lint: disable-next-line(unsafe-typecast) -- at most 0x1000 + ACTORS
        return address(uint160(0x1000 + i % ACTORS));
    }

    function teeTypeOf(uint256 i) internal pure returns (string memory) {
        if (i % 3 == 0) return "sev-snp";
        if (i % 3 == 1) return "tdx";
        return "sgx";
    }

    function cpuModelOf(uint256 i) internal pure returns (string memory) {
        if (i % 3 == 0) return "";
        if (i % 3 == 1) return "AMD EPYC 9654";
        return "Intel(R) Xeon(R) Platinum 8480+";
    }

    function resourceOf(uint256 i) internal pure returns (string memory) {
        i %= 8;
        if (i == 0) return "cpu";
        if (i == 1) return "memory";
        if (i == 2) return "storage";
        if (i == 3) return "gpu";
        if (i == 4) return "network-egress";
        if (i == 5) return "network-ingress";
        if (i == 6) return "cpu-burst";
        return "tee-memory";
    }

    /// One random operation; `r` supplies every choice.
    function step(uint256 r) internal {
        uint256 kind = r % 16;
        address who = actor(r >> 8);
        if (kind < 3) doRegister(r, who, false);
        else if (kind == 3) doRegister(r, who, true);
        else if (kind < 6) doSetProfile(r, who, false);
        else if (kind == 6) doSetProfile(r, who, true);
        else if (kind < 11) doSubscribe(r, who);
        else if (kind < 14) doUnsubscribe(r, who);
        else doRemove(who);
    }

    function doRegister(uint256 r, address creator, bool invalid) internal {
        IERC20 token = IERC20(address(uint160(0x7000 + (r >> 16) % 3)));
        string memory teeType = teeTypeOf(r >> 20);
        string memory cpuModel = cpuModelOf(r >> 24);
        uint256 count = 1 + (r >> 28) % 4;
        uint256 offset = (r >> 32) % 8;
        Registry.Price[] memory prices = new Registry.Price[](count);
        for (uint256 i; i < count; ++i) {
            uint256 h = uint256(keccak256(abi.encode(r, i)));
            prices[i] = Registry.Price(resourceOf(offset + i), h % 1e12, h >> (h % 256));
        }
        bytes memory expected;
        if (invalid) {
            uint256 k = (r >> 40) % count;
            uint256 variant = (r >> 36) % 8;
            if (variant == 0) {
                token = IERC20(address(0));
                expected = abi.encodeWithSelector(Registry.ZeroAddress.selector);
            } else if (variant == 1) {
                teeType = "";
                expected = abi.encodeWithSelector(Registry.EmptyTeeType.selector);
            } else if (variant == 2) {
                teeType = repeat("t", 129);
                expected = abi.encodeWithSelector(Registry.TeeTypeTooLong.selector, 129, 128);
            } else if (variant == 3) {
                prices = new Registry.Price[](0);
                expected = abi.encodeWithSelector(Registry.EmptyPrices.selector);
            } else if (variant == 4) {
                prices = manyPrices(33);
                expected = abi.encodeWithSelector(Registry.TooManyPrices.selector, 33, 32);
            } else if (variant == 5) {
                prices[k].resource = "";
                expected = abi.encodeWithSelector(Registry.EmptyResource.selector, k);
            } else if (variant == 6) {
                prices[k].resource = repeat("r", 129);
                expected = abi.encodeWithSelector(Registry.ResourceTooLong.selector, k, 129, 128);
            } else {
                Registry.Price[] memory longer = new Registry.Price[](count + 1);
                for (uint256 i; i < count; ++i) {
                    longer[i] = prices[i];
                }
                longer[count] = Registry.Price(prices[k].resource, 5, 5);
                prices = longer;
                expected = abi.encodeWithSelector(Registry.DuplicateResource.selector, prices[k].resource);
            }
        }
        if (expected.length != 0) vm.expectRevert(expected);
        vm.prank(creator);
        uint256 id = registry.registerPricingTable(token, teeType, cpuModel, prices);
        if (expected.length != 0) {
            ++failures;
            return;
        }
        assertEq(id, ++mTableCount, "table id");
        mTableHash[id] = tableHash(token, teeType, cpuModel, prices);
        mTableCreator[id] = creator;
        ++successes[0];
    }

    function doSetProfile(uint256 r, address who, bool invalid) internal {
        string memory uri = string.concat("ipfs://bafy", Strings.toHexString(r >> 128));
        if (invalid) {
            bool tooLong = (r >> 16) % 2 == 0;
            uri = tooLong ? repeat("u", 1025) : "";
            vm.expectRevert(
                tooLong
                    ? abi.encodeWithSelector(Registry.ProfileTooLong.selector, 1025, 1024)
                    : abi.encodeWithSelector(Registry.EmptyProfile.selector)
            );
        }
        vm.prank(who);
        registry.setProfile(uri);
        if (invalid) {
            ++failures;
            return;
        }
        mProfile[who] = uri;
        ++successes[1];
    }

    /// Mostly an existing table; now and then 0, one past the last, or a huge id.
    function pickTable(uint256 r) internal view returns (uint256) {
        if (mTableCount == 0 || (r >> 48) % 8 == 0) {
            uint256 v = (r >> 52) % 3;
            return v == 0 ? 0 : v == 1 ? mTableCount + 1 : type(uint256).max - (r >> 56) % 4;
        }
        return 1 + (r >> 56) % mTableCount;
    }

    function doSubscribe(uint256 r, address who) internal {
        uint256 id = pickTable(r);
        bool ok;
        if (id == 0 || id > mTableCount) {
            vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, id));
        } else if (bytes(mProfile[who]).length == 0) {
            vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, who));
        } else if (mSubscribed[who][id]) {
            vm.expectRevert(abi.encodeWithSelector(Registry.AlreadySubscribed.selector, who, id));
        } else {
            ok = true;
        }
        vm.prank(who);
        registry.subscribe(id);
        if (!ok) {
            ++failures;
            return;
        }
        mSubscribed[who][id] = true;
        ++mSubscriptionCount[who];
        ++successes[2];
    }

    function doUnsubscribe(uint256 r, address who) internal {
        uint256 id = pickTable(r);
        // Three times in four, pick one of the provider's own subscriptions if it has any.
        uint256 n = mSubscriptionCount[who];
        if (n != 0 && (r >> 44) % 4 != 0) {
            uint256 skip = (r >> 60) % n;
            for (id = 1; id <= mTableCount; ++id) {
                if (mSubscribed[who][id]) {
                    if (skip == 0) break;
                    --skip;
                }
            }
        }
        bool ok;
        if (id == 0 || id > mTableCount) {
            vm.expectRevert(abi.encodeWithSelector(Registry.NoSuchTable.selector, id));
        } else if (!mSubscribed[who][id]) {
            vm.expectRevert(abi.encodeWithSelector(Registry.NotSubscribed.selector, who, id));
        } else {
            ok = true;
        }
        vm.prank(who);
        registry.unsubscribe(id);
        if (!ok) {
            ++failures;
            return;
        }
        mSubscribed[who][id] = false;
        --mSubscriptionCount[who];
        ++successes[3];
    }

    function doRemove(address who) internal {
        bool ok = bytes(mProfile[who]).length != 0;
        if (!ok) vm.expectRevert(abi.encodeWithSelector(Registry.NotRegistered.selector, who));
        vm.prank(who);
        registry.removeProvider();
        if (!ok) {
            ++failures;
            return;
        }
        delete mProfile[who];
        for (uint256 id = 1; id <= mTableCount; ++id) {
            mSubscribed[who][id] = false;
        }
        mSubscriptionCount[who] = 0;
        ++successes[4];
    }

    /// The registry's views agree with the model. `full` also checks every table and every
    /// (provider, table) pair.
    function checkModel(bool full) internal view {
        assertEq(registry.pricingTableCount(), mTableCount, "tableCount");
        for (uint256 a; a < ACTORS; ++a) {
            address who = actor(a);
            assertEqStr(registry.profileOf(who), mProfile[who], "profileOf");
            uint256[] memory subs = registry.subscriptionsOf(who);
            assertEq(subs.length, mSubscriptionCount[who], "subscriptionsOf length");
            for (uint256 i; i < subs.length; ++i) {
                assertTrue(mSubscribed[who][subs[i]], "subscriptionsOf lists a table not subscribed to");
                for (uint256 j; j < i; ++j) {
                    assertTrue(subs[i] != subs[j], "subscriptionsOf repeats a table");
                }
                assertTrue(registry.isSubscribed(who, subs[i]), "isSubscribed for a listed table");
            }
            if (bytes(mProfile[who]).length == 0) assertEq(subs.length, 0, "subscribed without a profile");
            if (full) {
                for (uint256 id; id <= mTableCount + 1; ++id) {
                    assertEq(registry.isSubscribed(who, id), mSubscribed[who][id], "isSubscribed");
                }
            }
        }
        if (full) {
            for (uint256 id = 1; id <= mTableCount; ++id) {
                assertEq(tableHash(registry.getPricingTable(id)), mTableHash[id], "table contents");
            }
        }
    }
}

/// Random operation sequences against the model, and the market rebuilt from logs alone.
contract RegistrySequenceTest is RegistryDriver {
    uint256 internal constant MAX_STEPS = 64;

    struct RebuiltTable {
        uint256 id;
        address creator;
        IERC20 token;
        string teeType;
        string cpuModel;
        Registry.Price[] prices;
    }

    struct RebuiltProvider {
        address provider;
        string profile;
        uint256[] subscriptions; // the first `subscriptionCount` entries
        uint256 subscriptionCount;
    }

    struct Market {
        RebuiltTable[] tables;
        uint256 tableCount;
        RebuiltProvider[] providers;
        uint256 providerCount;
    }

    function setUp() public {
        registry = new Registry();
    }

    function run(uint256[] calldata ops) internal {
        uint256 steps = ops.length < MAX_STEPS ? ops.length : MAX_STEPS;
        for (uint256 i; i < steps; ++i) {
            step(ops[i]);
            checkModel(false);
        }
        checkModel(true);
    }

    function testFuzz_randomOperations_matchModel(uint256[] calldata ops) public {
        run(ops);
    }

    function testFuzz_logReplay_rebuildsMarket(uint256[] calldata ops) public {
        vm.recordLogs();
        run(ops);
        compare(rebuild(vm.getRecordedLogs()));
    }

    /// A long fixed sequence, to be sure every kind of operation succeeds and fails many times.
    function test_logReplay_longSequence() public {
        vm.recordLogs();
        for (uint256 i; i < 600; ++i) {
            step(uint256(keccak256(abi.encode("registry", i))));
        }
        checkModel(true);
        for (uint256 k; k < 5; ++k) {
            assertGe(successes[k], 10, "each kind of operation succeeded");
        }
        assertGe(failures, 100, "operations failed");
        Market memory market = rebuild(vm.getRecordedLogs());
        assertGe(market.tableCount, 50, "tables");
        compare(market);
    }

    function test_logReplay_emptyMarket() public {
        vm.recordLogs();
        compare(rebuild(vm.getRecordedLogs()));
    }

    // --- the client side: rebuild from logs, then compare with the views ---------------------------

    /// Rebuilds the market from the registry's logs alone, checking on the way that the log
    /// stream is self-consistent (sequential ids, subscriptions only by registered providers to
    /// known tables, `Unsubscribed` for everything before `ProviderRemoved`).
    function rebuild(Vm.Log[] memory logs) internal view returns (Market memory m) {
        uint256 tables;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(registry) && logs[i].topics[0] == Registry.PricingTableRegistered.selector) {
                ++tables;
            }
        }
        m.tables = new RebuiltTable[](tables);
        m.providers = new RebuiltProvider[](logs.length);
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory log = logs[i];
            if (log.emitter != address(registry)) continue;
            bytes32 topic = log.topics[0];
            if (topic == Registry.PricingTableRegistered.selector) {
                assertEq(log.topics.length, 4, "PricingTableRegistered topics");
                uint256 id = uint256(log.topics[1]);
                assertEq(id, m.tableCount + 1, "table ids are sequential");
                (string memory teeType, string memory cpuModel, Registry.Price[] memory prices) =
                    abi.decode(log.data, (string, string, Registry.Price[]));
                m.tables[m.tableCount++] = RebuiltTable(
                    id, topicAddress(log.topics[2]), IERC20(topicAddress(log.topics[3])), teeType, cpuModel, prices
                );
            } else if (topic == Registry.ProviderProfileSet.selector) {
                RebuiltProvider memory p = providerIn(m, topicAddress(log.topics[1]), tables);
                p.profile = abi.decode(log.data, (string));
                assertTrue(bytes(p.profile).length != 0, "ProviderProfileSet with an empty profile");
            } else if (topic == Registry.ProviderRemoved.selector) {
                RebuiltProvider memory p = providerIn(m, topicAddress(log.topics[1]), tables);
                assertTrue(bytes(p.profile).length != 0, "ProviderRemoved without a profile");
                assertEq(p.subscriptionCount, 0, "ProviderRemoved before Unsubscribed for every table");
                p.profile = "";
            } else if (topic == Registry.Subscribed.selector) {
                RebuiltProvider memory p = providerIn(m, topicAddress(log.topics[1]), tables);
                uint256 id = uint256(log.topics[2]);
                assertTrue(bytes(p.profile).length != 0, "Subscribed without a profile");
                assertTrue(id != 0 && id <= m.tableCount, "Subscribed to an unknown table");
                assertEq(indexOf(p, id), type(uint256).max, "Subscribed twice");
                p.subscriptions[p.subscriptionCount++] = id;
            } else if (topic == Registry.Unsubscribed.selector) {
                RebuiltProvider memory p = providerIn(m, topicAddress(log.topics[1]), tables);
                uint256 at = indexOf(p, uint256(log.topics[2]));
                assertTrue(at != type(uint256).max, "Unsubscribed without Subscribed");
                p.subscriptions[at] = p.subscriptions[--p.subscriptionCount];
            } else {
                revert("unknown event");
            }
        }
    }

    function topicAddress(bytes32 topic) internal pure returns (address) {
        assertEq(uint256(topic) >> 160, 0, "address topic");
        return address(uint160(uint256(topic)));
    }

    /// The provider's entry, created on first sight.
    function providerIn(Market memory m, address provider, uint256 tables)
        internal
        pure
        returns (RebuiltProvider memory p)
    {
        for (uint256 i; i < m.providerCount; ++i) {
            if (m.providers[i].provider == provider) return m.providers[i];
        }
        p = m.providers[m.providerCount++];
        p.provider = provider;
        p.subscriptions = new uint256[](tables);
    }

    function indexOf(RebuiltProvider memory p, uint256 id) internal pure returns (uint256) {
        for (uint256 i; i < p.subscriptionCount; ++i) {
            if (p.subscriptions[i] == id) return i;
        }
        return type(uint256).max;
    }

    function compare(Market memory m) internal view {
        assertEq(registry.pricingTableCount(), m.tableCount, "rebuilt tableCount");
        for (uint256 i; i < m.tableCount; ++i) {
            RebuiltTable memory t = m.tables[i];
            assertEq(
                tableHash(registry.getPricingTable(t.id)),
                tableHash(t.token, t.teeType, t.cpuModel, t.prices),
                "rebuilt table contents"
            );
            assertEq(t.creator, mTableCreator[t.id], "rebuilt table creator");
        }
        for (uint256 i; i < m.providerCount; ++i) {
            RebuiltProvider memory p = m.providers[i];
            assertEqStr(registry.profileOf(p.provider), p.profile, "rebuilt profile");
            uint256[] memory subs = registry.subscriptionsOf(p.provider);
            assertEq(subs.length, p.subscriptionCount, "rebuilt subscription count");
            for (uint256 j; j < subs.length; ++j) {
                assertTrue(indexOf(p, subs[j]) != type(uint256).max, "rebuilt subscriptions");
            }
        }
        // Nobody is missing from the logs: every actor with a profile or a subscription was seen.
        for (uint256 a; a < ACTORS; ++a) {
            address who = actor(a);
            if (bytes(registry.profileOf(who)).length == 0 && registry.subscriptionsOf(who).length == 0) continue;
            bool seen;
            for (uint256 i; i < m.providerCount; ++i) {
                if (m.providers[i].provider == who) seen = true;
            }
            assertTrue(seen, "provider missing from the logs");
        }
    }
}

/// The invariant runner's target: random steps, each checked against the model. A step that
/// fails (a wrong prediction, a failed assertion) is recorded rather than reverted away, so the
/// invariant sees it even though the runner ignores reverts.
contract RegistryHandler is RegistryDriver {
    bytes public failure;

    constructor() {
        registry = new Registry();
    }

    function randomStep(uint256 r) external {
        if (failure.length != 0) return;
        try this.stepUnguarded(r) {}
        catch (bytes memory reason) {
            failure = reason.length == 0 ? bytes("empty revert") : reason;
        }
    }

    function stepUnguarded(uint256 r) external {
        require(msg.sender == address(this), "internal");
        step(r);
    }

    function verify() external view {
        checkModel(true);
    }

    function steps() external view returns (uint256 ok, uint256 failed) {
        for (uint256 k; k < 5; ++k) {
            ok += successes[k];
        }
        failed = failures;
    }
}

contract RegistryInvariantTest is InvariantBase {
    RegistryHandler internal handler;

    function setUp() public {
        handler = new RegistryHandler();
        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](1);
        selectors[0] = RegistryHandler.randomStep.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    function invariant_noStepFailed() public view {
        vm.assertEq(handler.failure(), "", "a step failed");
    }

    function invariant_registryMatchesModel() public view {
        handler.verify();
    }
}
