//! The Registry contract through the Rust client against a real anvil.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::{connect, devnet};
use tpod_chain::ChainError;
use tpod_chain::client::{PricingTable, ResourcePrice};

#[tokio::test]
async fn provider_registers_profile_and_offers_a_table() {
    let net = devnet().await;
    let provider = connect(&net, "provider").await;
    let table = PricingTable {
        token: net.file.contracts.token,
        tee_type: "simulated".into(),
        cpu_model: "dev".into(),
        prices: vec![
            ResourcePrice { resource: "cpu".into(), reservation: U256::from(10), usage: U256::from(3) },
            ResourcePrice { resource: "memory".into(), reservation: U256::from(1), usage: U256::ZERO },
        ],
    };
    let id = provider.register_pricing_table(&table).await.unwrap();
    assert_eq!(provider.pricing_table(id).await.unwrap(), table);

    // Subscribing needs a profile first; the revert is decoded by name.
    let err = provider.subscribe(id).await.unwrap_err();
    assert!(matches!(&err, ChainError::Reverted { reason, .. } if reason.contains("NotRegistered")), "{err}");

    provider.set_profile("ipfs://bafyprofile").await.unwrap();
    provider.subscribe(id).await.unwrap();
    assert_eq!(provider.profile_of(provider.account()).await.unwrap().as_deref(), Some("ipfs://bafyprofile"));
    assert_eq!(provider.subscriptions_of(provider.account()).await.unwrap(), vec![id]);
    assert!(provider.is_subscribed(provider.account(), id).await.unwrap());
    assert_eq!(provider.pricing_table_count().await.unwrap(), id);

    let missing = id + U256::from(1);
    let err = provider.subscribe(missing).await.unwrap_err();
    assert!(err.to_string().contains("NoSuchTable"), "{err}");

    provider.remove_provider().await.unwrap();
    assert_eq!(provider.profile_of(provider.account()).await.unwrap(), None);
    assert!(provider.subscriptions_of(provider.account()).await.unwrap().is_empty());
    assert!(!provider.is_subscribed(provider.account(), id).await.unwrap());
}
