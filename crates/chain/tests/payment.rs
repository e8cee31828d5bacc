//! The Payment contract driven through the Rust client against a real anvil.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{advance_time, connect, devnet, tokens};
use tpod_chain::ChainError;
use tpod_chain::claim::{Claim, channel_id};
use tpod_chain::client::NewChannel;
use tpod_chain::contracts::Payment;

/// A devnet with the publisher and provider connected and a fresh enclave key.
struct Parties {
    net: tpod_devnet::Throwaway,
    publisher: tpod_chain::Chain,
    provider: tpod_chain::Chain,
    enclave: PrivateKeySigner,
}

async fn parties() -> Parties {
    let net = devnet().await;
    let publisher = connect(&net, "publisher").await;
    let provider = connect(&net, "provider").await;
    Parties { net, publisher, provider, enclave: PrivateKeySigner::random() }
}

fn new_channel(provider: alloy::primitives::Address, enclave: &PrivateKeySigner) -> NewChannel {
    NewChannel {
        provider,
        pod_id: B256::random(),
        enclave_signer: enclave.address(),
        amount: tokens(100),
        unlock_delay: 3600,
        max_rate: 0,
    }
}

#[tokio::test]
async fn channel_lifecycle_pays_provider_and_returns_exactly_the_rest() {
    let Parties { net, publisher, provider, enclave } = parties().await;
    let token = net.file.contracts.token;
    let ch = new_channel(provider.account(), &enclave);

    publisher.approve_payment(token, tokens(150)).await.unwrap();
    let id = publisher.create_channel(&ch).await.unwrap();
    assert_eq!(id, channel_id(publisher.account(), provider.account(), ch.pod_id));
    publisher.deposit(provider.account(), ch.pod_id, tokens(50)).await.unwrap();

    let state = publisher.channel(id).await.unwrap().unwrap();
    assert_eq!(state.deposited, tokens(150));
    assert_eq!(state.enclave_signer, enclave.address());
    assert_eq!(state.unlock_at, None);

    // The digest the Rust side signs is the one the contract checks.
    let domain = provider.claim_domain();
    let claim = Claim::new(id, tokens(30), B256::repeat_byte(0xab));
    let on_chain = Payment::new(net.file.contracts.payment, provider.provider())
        .claimDigest(id, claim.cumulativeAmount, claim.usageDigest)
        .call()
        .await
        .unwrap();
    assert_eq!(claim.digest(&domain), on_chain);

    // Anyone may send the claim; the provider is paid.
    let sig = claim.sign(&domain, &enclave).unwrap();
    publisher.claim(publisher.account(), provider.account(), ch.pod_id, &claim, &sig).await.unwrap();
    assert_eq!(provider.token_balance(token, provider.account()).await.unwrap(), tokens(30));

    // Unlock: the provider still claims during the delay; the publisher gets exactly the rest.
    publisher.request_unlock(provider.account(), ch.pod_id).await.unwrap();
    let early = publisher.withdraw_unlocked(provider.account(), ch.pod_id).await.unwrap_err();
    assert!(matches!(&early, ChainError::Reverted { reason, .. } if reason.contains("UnlockPending")), "{early}");
    let last = Claim::new(id, tokens(40), B256::repeat_byte(0xcd));
    let sig = last.sign(&domain, &enclave).unwrap();
    provider.claim(publisher.account(), provider.account(), ch.pod_id, &last, &sig).await.unwrap();
    advance_time(&publisher, 3600).await;
    let before = publisher.token_balance(token, publisher.account()).await.unwrap();
    let returned = publisher.withdraw_unlocked(provider.account(), ch.pod_id).await.unwrap();
    assert_eq!(returned, tokens(110));
    assert_eq!(publisher.token_balance(token, publisher.account()).await.unwrap(), before + tokens(110));
    assert_eq!(provider.token_balance(token, provider.account()).await.unwrap(), tokens(40));

    let refunded = publisher.close_channel(provider.account(), ch.pod_id).await.unwrap();
    assert_eq!(refunded, U256::ZERO);
    let state = publisher.channel(id).await.unwrap().unwrap();
    assert!(state.closed);
    assert_eq!(state.unclaimed(), U256::ZERO);
    assert_eq!(publisher.token_balance(token, net.file.contracts.payment).await.unwrap(), U256::ZERO);
}

#[tokio::test]
async fn provider_release_lets_the_publisher_close_at_once_with_exactly_the_rest() {
    let Parties { net, publisher, provider, enclave } = parties().await;
    let token = net.file.contracts.token;
    let ch = new_channel(provider.account(), &enclave);
    publisher.approve_payment(token, ch.amount).await.unwrap();
    let id = publisher.create_channel(&ch).await.unwrap();

    // The provider's final claim, signed by the enclave.
    let domain = provider.claim_domain();
    let last = Claim::new(id, tokens(30), B256::repeat_byte(0xef));
    let sig = last.sign(&domain, &enclave).unwrap();
    provider.claim(publisher.account(), provider.account(), ch.pod_id, &last, &sig).await.unwrap();

    // Only the provider can release: from the publisher's account it addresses a channel with the
    // publisher as provider, which does not exist.
    let err = publisher.release(publisher.account(), ch.pod_id).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Reverted { call: "release", reason } if reason.contains("ChannelNotFound")),
        "{err}"
    );
    assert_eq!(publisher.channel(id).await.unwrap().unwrap().unlock_at, None);

    // The provider waives the rest of the unlock delay: unlocked as of the release's block.
    let receipt = provider.release(publisher.account(), ch.pod_id).await.unwrap();
    let released = receipt.decoded_log::<Payment::Released>().expect("a Released event").data;
    assert_eq!(released.publisher, publisher.account());
    assert_eq!(released.provider, provider.account());
    assert_eq!(released.channelId, id);
    let block = provider.provider().get_block_by_number(receipt.block_number.unwrap().into()).await.unwrap().unwrap();
    assert_eq!(released.unlockAt, U256::from(block.header.timestamp));
    assert_eq!(publisher.channel(id).await.unwrap().unwrap().unlock_at, Some(block.header.timestamp));

    // No waiting: the publisher closes right away and gets exactly deposited - claimed.
    let before = publisher.token_balance(token, publisher.account()).await.unwrap();
    let refunded = publisher.close_channel(provider.account(), ch.pod_id).await.unwrap();
    assert_eq!(refunded, tokens(70));
    assert_eq!(publisher.token_balance(token, publisher.account()).await.unwrap(), before + tokens(70));
    assert_eq!(provider.token_balance(token, provider.account()).await.unwrap(), tokens(30));
    assert_eq!(publisher.token_balance(token, net.file.contracts.payment).await.unwrap(), U256::ZERO);

    let state = publisher.channel(id).await.unwrap().unwrap();
    assert!(state.closed);
    assert_eq!(state.deposited, tokens(30));
    assert_eq!(state.claimed, tokens(30));
    assert_eq!(state.deposited, state.claimed);

    // A closed channel cannot be released.
    let err = provider.release(publisher.account(), ch.pod_id).await.unwrap_err();
    assert!(err.to_string().contains("ChannelIsClosed"), "{err}");
}

#[tokio::test]
async fn claim_signed_by_another_key_is_refused_by_name() {
    let Parties { net, publisher, provider, enclave } = parties().await;
    let token = net.file.contracts.token;
    let ch = new_channel(provider.account(), &enclave);
    publisher.approve_payment(token, ch.amount).await.unwrap();
    let id = publisher.create_channel(&ch).await.unwrap();

    let claim = Claim::new(id, tokens(1), B256::ZERO);
    let forged = claim.sign(&provider.claim_domain(), &PrivateKeySigner::random()).unwrap();
    let err = provider.claim(publisher.account(), provider.account(), ch.pod_id, &claim, &forged).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Reverted { call: "claim", reason } if reason.contains("InvalidSignature")),
        "{err}"
    );
    assert_eq!(provider.token_balance(token, provider.account()).await.unwrap(), U256::ZERO);

    // More than deposited is refused too, even when properly signed.
    let greedy = Claim::new(id, tokens(101), B256::ZERO);
    let sig = greedy.sign(&provider.claim_domain(), &enclave).unwrap();
    let err = provider.claim(publisher.account(), provider.account(), ch.pod_id, &greedy, &sig).await.unwrap_err();
    assert!(err.to_string().contains("ClaimExceedsDeposit"), "{err}");
}

#[tokio::test]
async fn missing_gas_tokens_or_allowance_each_get_their_own_error() {
    let net = devnet().await;
    let provider = connect(&net, "provider").await;
    let token = net.file.contracts.token;
    let enclave = PrivateKeySigner::random();
    let ch = new_channel(provider.account(), &enclave);

    // No gas money at all.
    let broke = PrivateKeySigner::random();
    let chain = tpod_chain::Chain::connect(&net.file.rpc_url, broke.clone(), net.file.contracts).await.unwrap();
    let err = chain.create_channel(&ch).await.unwrap_err();
    assert!(matches!(err, ChainError::NoGasFunds { account, .. } if account == broke.address()), "{err}");

    // Gas money but no tokens.
    let (_, chain) = common::fresh_account(&net).await;
    let err = chain.create_channel(&ch).await.unwrap_err();
    assert!(
        matches!(err, ChainError::InsufficientBalance { have, need, .. } if have.is_zero() && need == ch.amount),
        "{err}"
    );
    assert!(err.to_string().contains(&token.to_string()), "{err}");

    // Topping up a channel that does not exist.
    let publisher = connect(&net, "publisher").await;
    let err = publisher.deposit(provider.account(), B256::random(), tokens(1)).await.unwrap_err();
    assert!(matches!(err, ChainError::NoSuchChannel { .. }), "{err}");

    // Tokens but no allowance.
    let err = publisher.create_channel(&ch).await.unwrap_err();
    assert!(matches!(err, ChainError::InsufficientAllowance { have, .. } if have.is_zero()), "{err}");
    assert!(err.to_string().contains("approve"), "{err}");
}

#[tokio::test]
async fn wrong_url_and_chain_without_contracts_are_named() {
    let net = devnet().await;
    let signer = PrivateKeySigner::random();

    let err = tpod_chain::Chain::connect("http://127.0.0.1:1", signer.clone(), net.file.contracts).await.unwrap_err();
    assert!(matches!(&err, ChainError::Unreachable { url, .. } if url == "http://127.0.0.1:1"), "{err}");

    let err = tpod_chain::Chain::connect("not a url", signer.clone(), net.file.contracts).await.unwrap_err();
    assert!(matches!(err, ChainError::InvalidUrl { .. }), "{err}");

    // A second chain that has never seen our contracts.
    let empty = tpod_devnet::anvil::AnvilProcess::spawn(&tpod_devnet::anvil::AnvilOptions {
        bin: tpod_devnet::anvil::locate(common::anvil_bin().as_deref()).unwrap(),
        port: 0,
        chain_id: 31337,
        state: None,
        log: net.dir.path().join("empty-anvil.log"),
        detach: false,
    })
    .await
    .unwrap();
    let err = tpod_chain::Chain::connect(&empty.url, signer, net.file.contracts).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::NoContract { name: "Payment", address, .. } if *address == net.file.contracts.payment),
        "{err}"
    );
}

#[tokio::test]
async fn an_unchecked_chain_is_built_without_the_node_and_verified_later() {
    let net = devnet().await;
    let signer = PrivateKeySigner::random();
    let c = net.file.contracts;

    // Nothing answers there: it is built all the same, and calls say the RPC is down.
    let down = tpod_chain::Chain::unchecked("http://127.0.0.1:1", signer.clone(), 31337, c).unwrap();
    assert_eq!((down.chain_id(), *down.contracts()), (31337, c));
    let err = down.verify().await.unwrap_err();
    assert!(matches!(&err, ChainError::Unreachable { url, .. } if url == "http://127.0.0.1:1"), "{err}");
    let err = tpod_chain::Chain::unchecked("not a url", signer.clone(), 31337, c).unwrap_err();
    assert!(matches!(err, ChainError::InvalidUrl { .. }), "{err}");

    let url = &net.file.rpc_url;
    let chain = tpod_chain::Chain::unchecked(url, signer.clone(), net.file.chain_id, c).unwrap();
    chain.verify().await.unwrap();
    assert_eq!(chain.payment_token().await.unwrap(), c.token);

    let err = tpod_chain::Chain::unchecked(url, signer.clone(), 5, c).unwrap().verify().await.unwrap_err();
    assert!(matches!(err, ChainError::WrongChain { expected: 5, actual, .. } if actual == net.file.chain_id), "{err}");
    // Another contract with code where the token should be.
    let wrong = tpod_chain::client::ContractAddresses { token: c.registry, ..c };
    let err = tpod_chain::Chain::unchecked(url, signer.clone(), net.file.chain_id, wrong).unwrap().verify().await;
    let err = err.unwrap_err();
    assert!(
        matches!(err, ChainError::WrongToken { expected, actual, .. } if expected == c.registry && actual == c.token),
        "{err}"
    );
    let nowhere = tpod_chain::client::ContractAddresses { registry: alloy::primitives::Address::repeat_byte(7), ..c };
    let err = tpod_chain::Chain::unchecked(url, signer, net.file.chain_id, nowhere).unwrap().verify().await;
    let err = err.unwrap_err();
    assert!(matches!(err, ChainError::NoContract { name: "Registry", .. }), "{err}");
}

#[tokio::test]
async fn spend_cap_limits_claims_to_rate_times_elapsed() {
    let Parties { net, publisher, provider, enclave } = parties().await;
    let rate = tokens(1).to::<u128>(); // one token per second
    let ch = NewChannel { max_rate: rate, ..new_channel(provider.account(), &enclave) };
    publisher.approve_payment(net.file.contracts.token, ch.amount).await.unwrap();
    let id = publisher.create_channel(&ch).await.unwrap();
    let state = publisher.channel(id).await.unwrap().unwrap();
    let (cap_rate, created_at) = state.cap.unwrap();
    assert_eq!(cap_rate, rate);

    advance_time(&publisher, 10).await;
    let domain = provider.claim_domain();
    let too_fast = Claim::new(id, tokens(60), B256::ZERO);
    let sig = too_fast.sign(&domain, &enclave).unwrap();
    let err = provider.claim(publisher.account(), provider.account(), ch.pod_id, &too_fast, &sig).await.unwrap_err();
    assert!(err.to_string().contains("ClaimExceedsRate"), "{err}");

    let now = publisher.channel(id).await.unwrap().unwrap();
    assert_eq!(now.cap.unwrap().1, created_at);
    let within = Claim::new(id, tokens(10), B256::ZERO);
    let sig = within.sign(&domain, &enclave).unwrap();
    provider.claim(publisher.account(), provider.account(), ch.pod_id, &within, &sig).await.unwrap();
    assert_eq!(provider.token_balance(net.file.contracts.token, provider.account()).await.unwrap(), tokens(10));
}
