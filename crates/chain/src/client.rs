//! Typed calls to the Payment, Registry and test token contracts.
//!
//! [`Chain::connect`] checks up front that the RPC answers and that every configured address
//! holds code, so a wrong URL or a chain without our contracts is reported before anything is
//! sent; [`Chain::unchecked`] builds one without the node, to [`Chain::verify`] later. Calls that move tokens check gas funds, token balance and allowance first and say which
//! one is missing; contract reverts are decoded into the contract's custom error by name.

use std::fmt::Debug;

use alloy::contract::{CallBuilder, CallDecoder};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError, TransportErrorKind};
use serde::{Deserialize, Serialize};

use crate::claim;
use crate::contracts::{Payment, Registry, TestToken};
use crate::error::ChainError;

/// How long to wait for a sent transaction to be mined.
const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How often to ask for its receipt.
const RECEIPT_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Where the Trusted Pods contracts live on a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractAddresses {
    /// The Payment contract.
    pub payment: Address,
    /// The Registry contract.
    pub registry: Address,
    /// The ERC-20 token channels are funded with by default.
    pub token: Address,
}

/// A new payment channel, as the publisher opens it.
#[derive(Clone, Debug)]
pub struct NewChannel {
    /// The provider that will be paid (also its payout address).
    pub provider: Address,
    /// The pod's id, unique per (publisher, provider); never reused.
    pub pod_id: B256,
    /// The provider enclave's signing address: the only key whose claims the contract accepts.
    pub enclave_signer: Address,
    /// Initial funds, in token base units.
    pub amount: U256,
    /// Seconds between `requestUnlock` and `withdrawUnlocked`.
    pub unlock_delay: u32,
    /// Spend cap in token base units per second; zero means none.
    pub max_rate: u128,
}

/// A channel's on-chain state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// The enclave signer recorded at creation.
    pub enclave_signer: Address,
    /// When a requested unlock completes (unix seconds), if one is requested.
    pub unlock_at: Option<u64>,
    /// Whether the publisher has closed the channel.
    pub closed: bool,
    /// Spend cap per second and block time of creation (unix seconds), if the channel has a cap.
    pub cap: Option<(u128, u64)>,
    /// Everything ever deposited.
    pub deposited: U256,
    /// Everything ever claimed by the provider.
    pub claimed: U256,
    /// The unlock delay in seconds.
    pub unlock_delay: u32,
}

impl ChannelState {
    /// Funds locked and not yet claimed.
    pub fn unclaimed(&self) -> U256 {
        self.deposited - self.claimed
    }
}

/// One row of a pricing table: prices in token base units per unit-second.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePrice {
    /// The resource's name, e.g. `cpu` (millicores) or `memory` (bytes).
    pub resource: String,
    /// Price per reserved unit-second.
    pub reservation: U256,
    /// Price per used unit-second.
    pub usage: U256,
}

/// A pricing table as registered in the Registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingTable {
    /// The token prices are in.
    pub token: Address,
    /// The TEE kind, e.g. `sev-snp`, `tdx`, `simulated`.
    pub tee_type: String,
    /// The CPU model, free text.
    pub cpu_model: String,
    /// Per-resource prices.
    pub prices: Vec<ResourcePrice>,
}

/// Builds an HTTP provider that signs with `signer` and checks that the RPC answers.
/// Returns the provider and the chain id.
pub async fn connect_provider(url: &str, signer: PrivateKeySigner) -> Result<(DynProvider, u64), ChainError> {
    let provider = build_provider(url, signer, None)?;
    let chain_id = provider
        .get_chain_id()
        .await
        .map_err(|e| ChainError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
    Ok((provider, chain_id))
}

/// An HTTP provider that signs with `signer`, without asking the node anything: alloy's HTTP
/// transport connects on the first request. Transactions are signed for `chain_id` when given,
/// else for the chain id the node reports on the first send.
fn build_provider(url: &str, signer: PrivateKeySigner, chain_id: Option<u64>) -> Result<DynProvider, ChainError> {
    let parsed = url
        .parse::<alloy::transports::http::reqwest::Url>()
        .map_err(|e| ChainError::InvalidUrl { url: url.to_owned(), reason: e.to_string() })?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        // Asks the node for the nonce on every send: a cached nonce drifts when a send fails
        // after filling (a refused estimate) or when another process uses the same key.
        .with_simple_nonce_management()
        .filler(alloy::providers::fillers::ChainIdFiller::new(chain_id))
        .wallet(EthereumWallet::from(signer))
        .connect_http(parsed)
        .erased())
}

/// A connection to one chain, acting as one account.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: DynProvider,
    url: String,
    chain_id: u64,
    account: Address,
    contracts: ContractAddresses,
}

impl Chain {
    /// Connects to `url` as `signer`, and checks that the contracts exist there.
    pub async fn connect(
        url: &str,
        signer: PrivateKeySigner,
        contracts: ContractAddresses,
    ) -> Result<Self, ChainError> {
        let account = signer.address();
        let (provider, chain_id) = connect_provider(url, signer).await?;
        let chain = Self { provider, url: url.to_owned(), chain_id, account, contracts };
        for (name, address) in
            [("Payment", contracts.payment), ("Registry", contracts.registry), ("token", contracts.token)]
        {
            let code = chain.provider.get_code_at(address).await.map_err(|e| chain.rpc_error("eth_getCode", e))?;
            if code.is_empty() {
                return Err(ChainError::NoContract { name, address, chain_id, url: url.to_owned() });
            }
        }
        Ok(chain)
    }

    /// Like [`Chain::connect`], with the token read from the Payment contract (a provider's
    /// configuration names only Payment and Registry).
    pub async fn connect_to_payment(
        url: &str,
        signer: PrivateKeySigner,
        payment: Address,
        registry: Address,
    ) -> Result<Self, ChainError> {
        let (provider, chain_id) = connect_provider(url, signer.clone()).await?;
        let code = provider
            .get_code_at(payment)
            .await
            .map_err(|e| ChainError::Rpc { call: "eth_getCode", reason: e.to_string() })?;
        if code.is_empty() {
            return Err(ChainError::NoContract { name: "Payment", address: payment, chain_id, url: url.to_owned() });
        }
        let token = Payment::new(payment, provider)
            .token()
            .call()
            .await
            .map_err(|e| ChainError::Rpc { call: "token", reason: e.to_string() })?;
        Self::connect(url, signer, ContractAddresses { payment, registry, token }).await
    }

    /// A connection to `url` as `signer` for a chain and contracts known in advance, built
    /// without asking the node anything, so it can be made while the RPC is down (calls fail
    /// with [`ChainError::Unreachable`] until it answers). Transactions are signed for
    /// `chain_id`, so a node serving another chain refuses them. Nothing is checked: call
    /// [`Chain::verify`] once the node answers. Fails only on a URL that does not parse.
    pub fn unchecked(
        url: &str,
        signer: PrivateKeySigner,
        chain_id: u64,
        contracts: ContractAddresses,
    ) -> Result<Self, ChainError> {
        let account = signer.address();
        let provider = build_provider(url, signer, Some(chain_id))?;
        Ok(Self { provider, url: url.to_owned(), chain_id, account, contracts })
    }

    /// Checks that the node serves this chain: its chain id is the one this connection signs
    /// for, every contract address holds code, and the Payment contract's token is
    /// [`ContractAddresses::token`]. What [`Chain::connect`] checks, for a chain made
    /// [`Chain::unchecked`]. An RPC that does not answer gives [`ChainError::Unreachable`]; a
    /// chain that does not match gives [`ChainError::WrongChain`], [`ChainError::NoContract`] or
    /// [`ChainError::WrongToken`].
    pub async fn verify(&self) -> Result<(), ChainError> {
        let actual = self.provider.get_chain_id().await.map_err(|e| self.rpc_error("eth_chainId", e))?;
        if actual != self.chain_id {
            return Err(ChainError::WrongChain { url: self.url.clone(), expected: self.chain_id, actual });
        }
        let c = self.contracts;
        for (name, address) in [("Payment", c.payment), ("Registry", c.registry), ("token", c.token)] {
            let code = self.provider.get_code_at(address).await.map_err(|e| self.rpc_error("eth_getCode", e))?;
            if code.is_empty() {
                return Err(ChainError::NoContract { name, address, chain_id: actual, url: self.url.clone() });
            }
        }
        let token = self.payment_token().await?;
        if token != c.token {
            return Err(ChainError::WrongToken { payment: c.payment, expected: c.token, actual: token });
        }
        Ok(())
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The account this connection sends from.
    pub fn account(&self) -> Address {
        self.account
    }

    /// The contract addresses.
    pub fn contracts(&self) -> &ContractAddresses {
        &self.contracts
    }

    /// The underlying alloy provider, for reads this client does not wrap.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The EIP-712 domain claims on this chain's Payment contract are signed in.
    pub fn claim_domain(&self) -> alloy::sol_types::Eip712Domain {
        claim::payment_domain(self.chain_id, self.contracts.payment)
    }

    fn payment(&self) -> Payment::PaymentInstance<DynProvider> {
        Payment::new(self.contracts.payment, self.provider.clone())
    }

    fn registry(&self) -> Registry::RegistryInstance<DynProvider> {
        Registry::new(self.contracts.registry, self.provider.clone())
    }

    fn token(&self, token: Address) -> TestToken::TestTokenInstance<DynProvider> {
        TestToken::new(token, self.provider.clone())
    }

    // --- balances and allowance ------------------------------------------------------------------

    /// The native balance (gas money) of `account`.
    pub async fn native_balance(&self, account: Address) -> Result<U256, ChainError> {
        self.provider.get_balance(account).await.map_err(|e| self.rpc_error("eth_getBalance", e))
    }

    /// The `token` balance of `account`.
    pub async fn token_balance(&self, token: Address, account: Address) -> Result<U256, ChainError> {
        self.token(token).balanceOf(account).call().await.map_err(|e| self.call_error("balanceOf", e))
    }

    /// How much of `token` the Payment contract may take from this account.
    pub async fn payment_allowance(&self, token: Address) -> Result<U256, ChainError> {
        self.token(token)
            .allowance(self.account, self.contracts.payment)
            .call()
            .await
            .map_err(|e| self.call_error("allowance", e))
    }

    /// Allows the Payment contract to take `amount` of `token` from this account.
    pub async fn approve_payment(&self, token: Address, amount: U256) -> Result<TransactionReceipt, ChainError> {
        self.transact("approve", self.token(token).approve(self.contracts.payment, amount)).await
    }

    /// Mints test tokens to `to` (devnet test token only).
    pub async fn faucet(&self, to: Address, amount: U256) -> Result<TransactionReceipt, ChainError> {
        self.transact("faucet", self.token(self.contracts.token).faucet(to, amount)).await
    }

    /// Checks that this account can pay gas and move `amount` of `token` into the Payment contract.
    pub async fn check_can_fund(&self, token: Address, amount: U256) -> Result<(), ChainError> {
        if self.native_balance(self.account).await?.is_zero() {
            return Err(ChainError::NoGasFunds { account: self.account, chain_id: self.chain_id });
        }
        let have = self.token_balance(token, self.account).await?;
        if have < amount {
            return Err(ChainError::InsufficientBalance { account: self.account, token, have, need: amount });
        }
        let allowed = self.payment_allowance(token).await?;
        if allowed < amount {
            return Err(ChainError::InsufficientAllowance {
                account: self.account,
                token,
                spender: self.contracts.payment,
                have: allowed,
                need: amount,
            });
        }
        Ok(())
    }

    // --- Payment -----------------------------------------------------------------------------------

    /// The ERC-20 token the Payment contract's channels are funded in.
    pub async fn payment_token(&self) -> Result<Address, ChainError> {
        self.payment().token().call().await.map_err(|e| self.call_error("token", e))
    }

    /// Opens a channel from this account (the publisher) and locks its initial funds.
    /// Returns the channel id.
    pub async fn create_channel(&self, ch: &NewChannel) -> Result<B256, ChainError> {
        self.check_can_fund(self.payment_token().await?, ch.amount).await?;
        let payment = self.payment();
        let call = payment.create(ch.provider, ch.pod_id, ch.enclave_signer, ch.amount, ch.unlock_delay, ch.max_rate);
        self.transact("create", call).await?;
        Ok(claim::channel_id(self.account, ch.provider, ch.pod_id))
    }

    /// Adds funds to this account's channel with `provider` for `pod_id`.
    pub async fn deposit(
        &self,
        provider: Address,
        pod_id: B256,
        amount: U256,
    ) -> Result<TransactionReceipt, ChainError> {
        let signer = self.own_channel_signer(provider, pod_id).await?;
        self.check_can_fund(self.payment_token().await?, amount).await?;
        self.transact("deposit", self.payment().deposit(provider, pod_id, signer, amount)).await
    }

    /// Submits an enclave-signed claim; anyone may send it, the provider is paid.
    pub async fn claim(
        &self,
        publisher: Address,
        provider: Address,
        pod_id: B256,
        claim: &claim::Claim,
        signature: &alloy::signers::Signature,
    ) -> Result<TransactionReceipt, ChainError> {
        // The contract takes the compact EIP-2098 form: r, then s with the y parity in its top bit.
        let compact = signature.as_erc2098();
        let (r, vs) = (B256::from_slice(&compact[..32]), B256::from_slice(&compact[32..]));
        let payment = self.payment();
        let call = payment.claim(publisher, provider, pod_id, claim.cumulativeAmount, claim.usageDigest, r, vs);
        self.transact("claim", call).await
    }

    /// Waives the rest of the unlock delay on `publisher`'s channel for `pod_id`, once the provider
    /// has made its final claim: the publisher may then take back what is unclaimed at once.
    /// Sent by the provider's account (the contract takes the sender as the channel's provider;
    /// from any other account the channel is not found). Claims still work until the publisher
    /// withdraws; a deposit by the publisher cancels the release.
    pub async fn release(&self, publisher: Address, pod_id: B256) -> Result<TransactionReceipt, ChainError> {
        self.transact("release", self.payment().release(publisher, pod_id)).await
    }

    /// Starts the unlock delay on this account's channel.
    pub async fn request_unlock(&self, provider: Address, pod_id: B256) -> Result<TransactionReceipt, ChainError> {
        self.transact("requestUnlock", self.payment().requestUnlock(provider, pod_id)).await
    }

    /// After the delay, takes back what is unclaimed. Returns the amount returned.
    pub async fn withdraw_unlocked(&self, provider: Address, pod_id: B256) -> Result<U256, ChainError> {
        let signer = self.own_channel_signer(provider, pod_id).await?;
        let receipt =
            self.transact("withdrawUnlocked", self.payment().withdrawUnlocked(provider, pod_id, signer)).await?;
        receipt.decoded_log::<Payment::Withdrawn>().map(|log| log.data.amount).ok_or_else(|| ChainError::Rpc {
            call: "withdrawUnlocked",
            reason: "receipt has no Withdrawn event".into(),
        })
    }

    /// Closes this account's channel for good, returning anything unclaimed.
    pub async fn close_channel(&self, provider: Address, pod_id: B256) -> Result<U256, ChainError> {
        let signer = self.own_channel_signer(provider, pod_id).await?;
        let receipt = self.transact("close", self.payment().close(provider, pod_id, signer)).await?;
        receipt
            .decoded_log::<Payment::ChannelClosed>()
            .map(|log| log.data.refunded)
            .ok_or_else(|| ChainError::Rpc { call: "close", reason: "receipt has no ChannelClosed event".into() })
    }

    /// A channel's state, or `None` if it was never created.
    pub async fn channel(&self, id: B256) -> Result<Option<ChannelState>, ChainError> {
        let ch = self.payment().getChannel(id).call().await.map_err(|e| self.call_error("getChannel", e))?;
        if ch.enclaveSigner.is_zero() {
            return Ok(None);
        }
        let cap = (ch.maxRate != 0).then(|| (ch.maxRate, ch.createdAt.to::<u64>()));
        Ok(Some(ChannelState {
            enclave_signer: ch.enclaveSigner,
            unlock_at: Some(ch.unlockAt.to::<u64>()).filter(|t| *t != 0),
            closed: ch.closed,
            cap,
            deposited: U256::from(ch.deposited),
            claimed: U256::from(ch.claimed),
            unlock_delay: ch.unlockDelay,
        }))
    }

    /// The enclave signer of this account's channel, which the contract's publisher calls name
    /// (it keys the channel's funds). An unknown channel gets the contract's own error.
    async fn own_channel_signer(&self, provider: Address, pod_id: B256) -> Result<Address, ChainError> {
        let id = claim::channel_id(self.account, provider, pod_id);
        let ch = self.payment().getChannel(id).call().await.map_err(|e| self.call_error("getChannel", e))?;
        if ch.enclaveSigner.is_zero() {
            return Err(ChainError::NoSuchChannel { publisher: self.account, provider, pod_id });
        }
        Ok(ch.enclaveSigner)
    }

    // --- Registry ----------------------------------------------------------------------------------

    /// Registers an immutable pricing table; returns its id.
    pub async fn register_pricing_table(&self, table: &PricingTable) -> Result<U256, ChainError> {
        let prices = table
            .prices
            .iter()
            .map(|p| Registry::Price { resource: p.resource.clone(), reservation: p.reservation, usage: p.usage })
            .collect();
        let registry = self.registry();
        let call = registry.registerPricingTable(table.token, table.tee_type.clone(), table.cpu_model.clone(), prices);
        let receipt = self.transact("registerPricingTable", call).await?;
        receipt.decoded_log::<Registry::PricingTableRegistered>().map(|log| log.data.tableId).ok_or_else(|| {
            ChainError::Rpc {
                call: "registerPricingTable",
                reason: "receipt has no PricingTableRegistered event".into(),
            }
        })
    }

    /// A registered pricing table.
    pub async fn pricing_table(&self, id: U256) -> Result<PricingTable, ChainError> {
        let t = self.registry().getPricingTable(id).call().await.map_err(|e| self.call_error("getPricingTable", e))?;
        Ok(PricingTable {
            token: t.token,
            tee_type: t.teeType,
            cpu_model: t.cpuModel,
            prices: t
                .prices
                .into_iter()
                .map(|p| ResourcePrice { resource: p.resource, reservation: p.reservation, usage: p.usage })
                .collect(),
        })
    }

    /// Registers or updates this account's provider profile (URI or CID of its profile document).
    pub async fn set_profile(&self, profile_uri: &str) -> Result<TransactionReceipt, ChainError> {
        self.transact("setProfile", self.registry().setProfile(profile_uri.to_owned())).await
    }

    /// Removes this account's provider profile and subscriptions.
    pub async fn remove_provider(&self) -> Result<TransactionReceipt, ChainError> {
        self.transact("removeProvider", self.registry().removeProvider()).await
    }

    /// Offers pricing table `id` as this provider.
    pub async fn subscribe(&self, id: U256) -> Result<TransactionReceipt, ChainError> {
        self.transact("subscribe", self.registry().subscribe(id)).await
    }

    /// Stops offering pricing table `id`.
    pub async fn unsubscribe(&self, id: U256) -> Result<TransactionReceipt, ChainError> {
        self.transact("unsubscribe", self.registry().unsubscribe(id)).await
    }

    /// A provider's profile URI, if it is registered.
    pub async fn profile_of(&self, provider: Address) -> Result<Option<String>, ChainError> {
        let uri = self.registry().profileOf(provider).call().await.map_err(|e| self.call_error("profileOf", e))?;
        Ok(Some(uri).filter(|u| !u.is_empty()))
    }

    /// How many pricing tables are registered (ids run from 1 to this).
    pub async fn pricing_table_count(&self) -> Result<U256, ChainError> {
        self.registry().pricingTableCount().call().await.map_err(|e| self.call_error("pricingTableCount", e))
    }

    /// Whether `provider` offers pricing table `id`.
    pub async fn is_subscribed(&self, provider: Address, id: U256) -> Result<bool, ChainError> {
        self.registry().isSubscribed(provider, id).call().await.map_err(|e| self.call_error("isSubscribed", e))
    }

    /// The pricing tables a provider offers.
    pub async fn subscriptions_of(&self, provider: Address) -> Result<Vec<U256>, ChainError> {
        self.registry().subscriptionsOf(provider).call().await.map_err(|e| self.call_error("subscriptionsOf", e))
    }

    // --- plumbing ----------------------------------------------------------------------------------

    /// Sends a transaction and waits for its receipt; a revert comes back as its custom error.
    async fn transact<D: CallDecoder>(
        &self,
        call: &'static str,
        builder: CallBuilder<&DynProvider, D>,
    ) -> Result<TransactionReceipt, ChainError> {
        let pending = builder.send().await.map_err(|e| self.call_error(call, e))?;
        let receipt = self.wait_for_receipt(call, *pending.tx_hash()).await?;
        if !receipt.status() {
            return Err(ChainError::Reverted {
                call,
                reason: format!("transaction {} reverted", receipt.transaction_hash),
            });
        }
        Ok(receipt)
    }

    /// Polls for the receipt with a deadline, so a transaction that is never mined becomes a
    /// clear error instead of a hang.
    async fn wait_for_receipt(&self, call: &'static str, hash: B256) -> Result<TransactionReceipt, ChainError> {
        let deadline = std::time::Instant::now() + RECEIPT_TIMEOUT;
        loop {
            let found = self.provider.get_transaction_receipt(hash).await.map_err(|e| self.rpc_error(call, e))?;
            if let Some(receipt) = found {
                return Ok(receipt);
            }
            if std::time::Instant::now() > deadline {
                return Err(ChainError::Rpc {
                    call,
                    reason: format!("transaction {hash} not mined within {}s", RECEIPT_TIMEOUT.as_secs()),
                });
            }
            tokio::time::sleep(RECEIPT_POLL).await;
        }
    }

    fn rpc_error(&self, call: &'static str, e: RpcError<TransportErrorKind>) -> ChainError {
        match e {
            RpcError::Transport(kind) => ChainError::Unreachable { url: self.url.clone(), reason: kind.to_string() },
            other => ChainError::Rpc { call, reason: other.to_string() },
        }
    }

    fn call_error(&self, call: &'static str, e: alloy::contract::Error) -> ChainError {
        if let Some(reason) = decode_revert(&e) {
            return ChainError::Reverted { call, reason };
        }
        match e {
            alloy::contract::Error::TransportError(rpc) => self.rpc_error(call, rpc),
            other => ChainError::Rpc { call, reason: other.to_string() },
        }
    }
}

/// Names the custom error a contract reverted with, if the revert data is one of ours.
fn decode_revert(e: &alloy::contract::Error) -> Option<String> {
    fn show(e: impl Debug) -> String {
        format!("{e:?}")
    }
    e.as_decoded_interface_error::<Payment::PaymentErrors>()
        .map(show)
        .or_else(|| e.as_decoded_interface_error::<Registry::RegistryErrors>().map(show))
        .or_else(|| e.as_decoded_interface_error::<TestToken::TestTokenErrors>().map(show))
        .or_else(|| e.as_revert_data().map(|data| format!("revert data {data}")))
}
