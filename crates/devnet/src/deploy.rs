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
