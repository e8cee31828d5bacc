//! Deploying the Trusted Pods contracts and funding dev accounts on an anvil chain.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tpod_chain::ChainError;
use tpod_chain::client::{Chain, ContractAddresses, connect_provider};
use tpod_chain::contracts::{Payment, Registry, TestToken};

use crate::error::DevnetError;

fn deploy_error(what: &'static str) -> impl FnOnce(alloy::contract::Error) -> DevnetError {
    move |e| DevnetError::from(ChainError::Rpc { call: what, reason: e.to_string() })
}

/// Deploys the test token, Payment and Registry from `deployer`.
pub async fn deploy_contracts(url: &str, deployer: PrivateKeySigner) -> Result<ContractAddresses, DevnetError> {
    let (provider, _) = connect_provider(url, deployer).await?;
    let token = *TestToken::deploy(&provider).await.map_err(deploy_error("deploy TestToken"))?.address();
    let payment = *Payment::deploy(&provider, token).await.map_err(deploy_error("deploy Payment"))?.address();
    let registry = *Registry::deploy(&provider).await.map_err(deploy_error("deploy Registry"))?.address();
    Ok(ContractAddresses { payment, registry, token })
}

/// Sets `account`'s native balance (anvil only).
pub async fn set_native_balance(url: &str, account: Address, amount: U256) -> Result<(), DevnetError> {
    let (provider, _) = connect_provider(url, PrivateKeySigner::random()).await?;
    provider
        .raw_request::<_, ()>("anvil_setBalance".into(), (account, amount))
        .await
        .map_err(|e| DevnetError::from(ChainError::Rpc { call: "anvil_setBalance", reason: e.to_string() }))
}

/// Mints `amount` test tokens to `to`, in faucet-sized steps.
pub async fn mint_test_tokens(
    url: &str,
    sender: PrivateKeySigner,
    contracts: ContractAddresses,
    to: Address,
    amount: U256,
) -> Result<(), DevnetError> {
    let chain = Chain::connect(url, sender, contracts).await?;
    let limit = TestToken::new(contracts.token, chain.provider())
        .FAUCET_LIMIT()
        .call()
        .await
        .map_err(|e| DevnetError::from(ChainError::Rpc { call: "FAUCET_LIMIT", reason: e.to_string() }))?;
    let mut left = amount;
    while !left.is_zero() {
        let step = left.min(limit);
        chain.faucet(to, step).await?;
        left -= step;
    }
    Ok(())
}

/// Where [`deploy_for_token`] put Payment and Registry, and from which block they exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployed {
    /// Payment (for `token`), Registry and the token.
    pub contracts: ContractAddresses,
    /// The block of the first deployment: event watchers need not look earlier.
    pub block: u64,
}

/// Deploys Payment for an existing ERC-20 `token`, and Registry, on any chain at `url`, from
/// `deployer` (which pays the gas). Refuses a token address without code before sending anything.
pub async fn deploy_for_token(url: &str, deployer: PrivateKeySigner, token: Address) -> Result<Deployed, DevnetError> {
    let (provider, chain_id) = connect_provider(url, deployer).await?;
    let rpc = |call: &'static str| {
        move |e: alloy::transports::TransportError| ChainError::Rpc { call, reason: e.to_string() }
    };
    let code = provider.get_code_at(token).await.map_err(rpc("eth_getCode"))?;
    if code.is_empty() {
        return Err(ChainError::NoContract { name: "token", address: token, chain_id, url: url.to_owned() }.into());
    }
    let pending = Payment::deploy_builder(&provider, token).send().await.map_err(deploy_error("deploy Payment"))?;
    let receipt =
        pending.get_receipt().await.map_err(|e| ChainError::Rpc { call: "deploy Payment", reason: e.to_string() })?;
    let payment = receipt.contract_address.filter(|_| receipt.status()).ok_or_else(|| ChainError::Reverted {
        call: "deploy Payment",
        reason: format!("transaction {} reverted", receipt.transaction_hash),
    })?;
    let block = receipt.block_number.unwrap_or_default();
    let registry = *Registry::deploy(&provider).await.map_err(deploy_error("deploy Registry"))?.address();
    Ok(Deployed { contracts: ContractAddresses { payment, registry, token }, block })
}

/// Deploys the test token alone (an ERC-20 `TPT` with a faucet), for a chain whose Payment and
/// Registry are deployed afterwards, as on a network other than the devnet.
pub async fn deploy_test_token(url: &str, deployer: PrivateKeySigner) -> Result<Address, DevnetError> {
    let (provider, _) = connect_provider(url, deployer).await?;
    Ok(*TestToken::deploy(&provider).await.map_err(deploy_error("deploy TestToken"))?.address())
}
