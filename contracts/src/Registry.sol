// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {EnumerableSet} from "@openzeppelin/contracts/utils/structs/EnumerableSet.sol";

/// @title Trusted Pods provider registry
/// @notice The on-chain market: anyone registers pricing tables (immutable once registered);
/// providers publish a profile (the URI or CID of a signed profile document) and subscribe to
/// the tables they offer. Publishers read this to pick a provider before opening a payment
/// channel.
/// @dev The events carry everything: a client can rebuild the whole market (every provider with
/// its profile, every table with its full prices, who offers which table) from logs alone.
/// Nothing here moves tokens or calls the token; `token` only names what the prices are in.
contract Registry {
    using EnumerableSet for EnumerableSet.UintSet;

    /// @notice The price of one resource, in token base units per unit-second: `reservation` is
    /// charged for what is reserved, `usage` for what is used.
    struct Price {
        string resource;
        uint256 reservation;
        uint256 usage;
    }

    struct PricingTable {
        IERC20 token;
        string teeType;
        string cpuModel; // may be empty: any CPU model
        Price[] prices;
    }

    uint256 public constant MAX_PRICES = 32;
    uint256 public constant MAX_PROFILE_LENGTH = 1024; // bytes
    uint256 public constant MAX_FIELD_LENGTH = 128; // bytes, for teeType, cpuModel and each resource

    mapping(uint256 tableId => PricingTable) private _tables;
    uint256 private _tableCount;
    mapping(address provider => string) private _profiles;
    mapping(address provider => EnumerableSet.UintSet) private _subscriptions;

    event PricingTableRegistered(
        uint256 indexed tableId,
        address indexed creator,
        IERC20 indexed token,
        string teeType,
        string cpuModel,
        Price[] prices
    );
    event ProviderProfileSet(address indexed provider, string profileUri);
    event ProviderRemoved(address indexed provider);
    event Subscribed(address indexed provider, uint256 indexed tableId);
    event Unsubscribed(address indexed provider, uint256 indexed tableId);

    error ZeroAddress();
    error EmptyPrices();
    error TooManyPrices(uint256 count, uint256 max);
    error EmptyResource(uint256 index);
    error ResourceTooLong(uint256 index, uint256 length, uint256 max);
    error DuplicateResource(string resource);
    error EmptyTeeType();
    error TeeTypeTooLong(uint256 length, uint256 max);
    error CpuModelTooLong(uint256 length, uint256 max);
    error EmptyProfile();
    error ProfileTooLong(uint256 length, uint256 max);
    error NoSuchTable(uint256 tableId);
    error NotRegistered(address provider);
    error AlreadySubscribed(address provider, uint256 tableId);
    error NotSubscribed(address provider, uint256 tableId);

    // --- pricing tables (anyone) -------------------------------------------------------------------

    /// @notice Registers an immutable pricing table. Ids start at 1 and increase by one.
    /// @dev Resources must be non-empty and distinct (compared byte for byte); `cpuModel` may be
    /// empty. Zero prices are allowed.
    function registerPricingTable(
        IERC20 token,
        string calldata teeType,
        string calldata cpuModel,
        Price[] calldata prices
    ) external returns (uint256 tableId) {
        if (address(token) == address(0)) revert ZeroAddress();
        if (bytes(teeType).length == 0) revert EmptyTeeType();
        if (bytes(teeType).length > MAX_FIELD_LENGTH) revert TeeTypeTooLong(bytes(teeType).length, MAX_FIELD_LENGTH);
        if (bytes(cpuModel).length > MAX_FIELD_LENGTH) {
            revert CpuModelTooLong(bytes(cpuModel).length, MAX_FIELD_LENGTH);
        }
        uint256 count = prices.length;
        if (count == 0) revert EmptyPrices();
        if (count > MAX_PRICES) revert TooManyPrices(count, MAX_PRICES);

        tableId = ++_tableCount;
        PricingTable storage table = _tables[tableId];
        table.token = token;
        table.teeType = teeType;
        table.cpuModel = cpuModel;
        bytes32[] memory seen = new bytes32[](count);
        for (uint256 i; i < count; ++i) {
            string calldata resource = prices[i].resource;
            uint256 length = bytes(resource).length;
            if (length == 0) revert EmptyResource(i);
            if (length > MAX_FIELD_LENGTH) revert ResourceTooLong(i, length, MAX_FIELD_LENGTH);
            bytes32 hash = keccak256(bytes(resource));
            for (uint256 j; j < i; ++j) {
                if (seen[j] == hash) revert DuplicateResource(resource);
            }
            seen[i] = hash;
            table.prices.push(prices[i]);
        }

        emit PricingTableRegistered(tableId, msg.sender, token, teeType, cpuModel, prices);
    }

    // --- providers (msg.sender is the provider) ------------------------------------------------------

    /// @notice Registers the sender as a provider, or replaces its profile.
    /// @param profileUri The URI or CID of the provider's signed profile document.
    function setProfile(string calldata profileUri) external {
        uint256 length = bytes(profileUri).length;
        if (length == 0) revert EmptyProfile();
        if (length > MAX_PROFILE_LENGTH) revert ProfileTooLong(length, MAX_PROFILE_LENGTH);
        _profiles[msg.sender] = profileUri;
        emit ProviderProfileSet(msg.sender, profileUri);
    }

    /// @notice Clears the sender's profile and unsubscribes it from every table, emitting
    /// `Unsubscribed` for each (in `subscriptionsOf` order) and then `ProviderRemoved`.
    /// @dev Costs gas linear in the number of subscriptions; a provider with very many can
    /// `unsubscribe` some first.
    function removeProvider() external {
        if (bytes(_profiles[msg.sender]).length == 0) revert NotRegistered(msg.sender);
        delete _profiles[msg.sender];
        EnumerableSet.UintSet storage subs = _subscriptions[msg.sender];
        uint256[] memory tableIds = subs.values();
        subs.clear();
        for (uint256 i; i < tableIds.length; ++i) {
            emit Unsubscribed(msg.sender, tableIds[i]);
        }
        emit ProviderRemoved(msg.sender);
    }

    /// @notice The sender offers `tableId`. Needs a profile.
    function subscribe(uint256 tableId) external {
        _requireTable(tableId);
        if (bytes(_profiles[msg.sender]).length == 0) revert NotRegistered(msg.sender);
        if (!_subscriptions[msg.sender].add(tableId)) revert AlreadySubscribed(msg.sender, tableId);
        emit Subscribed(msg.sender, tableId);
    }

    /// @notice The sender stops offering `tableId`.
    function unsubscribe(uint256 tableId) external {
        _requireTable(tableId);
        if (!_subscriptions[msg.sender].remove(tableId)) revert NotSubscribed(msg.sender, tableId);
        emit Unsubscribed(msg.sender, tableId);
    }

    // --- views -------------------------------------------------------------------------------------

    /// @notice The number of tables registered, which is also the highest table id.
    function pricingTableCount() external view returns (uint256) {
        return _tableCount;
    }

    /// @notice Reverts with `NoSuchTable` for an id that was never registered.
    function getPricingTable(uint256 tableId) external view returns (PricingTable memory) {
        _requireTable(tableId);
        return _tables[tableId];
    }

    /// @notice The provider's profile URI, or "" if it has none.
    function profileOf(address provider) external view returns (string memory) {
        return _profiles[provider];
    }

    function isSubscribed(address provider, uint256 tableId) external view returns (bool) {
        return _subscriptions[provider].contains(tableId);
    }

    /// @notice The tables the provider offers. The order is unspecified: unsubscribing moves the
    /// last entry into the freed place.
    function subscriptionsOf(address provider) external view returns (uint256[] memory) {
        return _subscriptions[provider].values();
    }

    // --- internal ----------------------------------------------------------------------------------

    function _requireTable(uint256 tableId) private view {
        if (tableId == 0 || tableId > _tableCount) revert NoSuchTable(tableId);
    }
}
