//! Errors of the chain client. Each says what is wrong, with the thing it concerns (URL,
//! contract, account, token) and what to do about it.

use alloy::primitives::{Address, U256};

/// What can go wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC URL does not parse.
    #[error("invalid RPC URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        reason: String,
    },
    /// Nothing answers JSON-RPC at the URL.
    #[error(
        "cannot reach the chain RPC at {url}: {reason}. Is the node running and the URL right? \
         (for the local devnet: `tpod dev up`)"
    )]
    Unreachable {
        /// The URL that did not answer.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// An address that should hold one of our contracts holds no code.
    #[error(
        "no {name} contract at {address} on chain {chain_id} ({url}): this chain does not have the \
         Trusted Pods contracts at the configured address. Wrong network, or a stale devnet file? \
         (`tpod dev up` deploys them locally)"
    )]
    NoContract {
        /// Which contract was expected.
        name: &'static str,
        /// Where it was expected.
        address: Address,
        /// The chain that was asked.
        chain_id: u64,
        /// The RPC URL that was asked.
        url: String,
    },
    /// The node serves another chain than the one expected.
    #[error("the RPC at {url} serves chain {actual}, not chain {expected}: wrong RPC URL or chain id?")]
    WrongChain {
        /// The RPC URL that was asked.
        url: String,
        /// The chain id expected.
        expected: u64,
        /// The chain id the node reports.
        actual: u64,
    },
    /// The Payment contract takes another token than the one expected.
    #[error("the Payment contract {payment} takes token {actual}, not {expected}: wrong token address?")]
    WrongToken {
        /// The Payment contract.
        payment: Address,
        /// The token expected.
        expected: Address,
        /// The token the contract names.
        actual: Address,
    },
    /// The sending account cannot pay for gas.
    #[error("account {account} has no native currency on chain {chain_id} to pay for gas: fund it first")]
    NoGasFunds {
        /// The account.
        account: Address,
        /// The chain.
        chain_id: u64,
    },
    /// The sending account holds fewer tokens than the call moves.
    #[error(
        "account {account} holds {have} base units of token {token} but this needs {need}: \
         get more tokens first"
    )]
    InsufficientBalance {
        /// The account.
        account: Address,
        /// The ERC-20 token.
        token: Address,
        /// What it holds.
        have: U256,
        /// What the call needs.
        need: U256,
    },
    /// The Payment contract may not take enough of the account's tokens.
    #[error(
        "account {account} allows the Payment contract {spender} to take {have} base units of token \
         {token} but this needs {need}: approve the Payment contract for at least that amount first"
    )]
    InsufficientAllowance {
        /// The account.
        account: Address,
        /// The ERC-20 token.
        token: Address,
        /// The Payment contract.
        spender: Address,
        /// The current allowance.
        have: U256,
        /// What the call needs.
        need: U256,
    },
    /// This account has no channel with that provider for that pod.
    #[error("there is no payment channel from {publisher} to provider {provider} for pod {pod_id}")]
    NoSuchChannel {
        /// The publisher (this account).
        publisher: Address,
        /// The provider.
        provider: Address,
        /// The pod id.
        pod_id: alloy::primitives::B256,
    },
    /// The contract refused the call.
    #[error("{call} was refused by the contract: {reason}")]
    Reverted {
        /// The contract function.
        call: &'static str,
        /// The decoded custom error, or the node's message.
        reason: String,
    },
    /// The RPC failed in some other way.
    #[error("{call} failed: {reason}")]
    Rpc {
        /// What was being done.
        call: &'static str,
        /// The node's or transport's message.
        reason: String,
    },
    /// Signing or signature recovery failed.
    #[error("signing failed: {0}")]
    Signing(String),
}
