//! Admission by a real provider daemon (real anvil, real libp2p): which signed requests it
//! refuses and why, and that a refused deploy leaves nothing behind. Requests are built by hand
//! here, so that replays, stale expiries, tampering and foreign channels can be sent at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use tpod_wire::pb;

mod common;

use common::{MIN_FUNDING, fixture, now, pod, priced, refused, signed};

#[tokio::test]
async fn unpaid_foreign_and_underfunded_channels_are_refused() {
    let f = fixture("tpa1", "10.231.0.0/16").await;
    let info = f.info();

    // No channel at all.
    let pod_id = B256::random();
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 1, now() + 60)).await;
    refused(r, 402, "no payment channel");

    // A channel to another provider is not this provider's.
    let pod_id = B256::random();
    f.channel(Address::repeat_byte(0x42), pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 2, now() + 60)).await;
    refused(r, 402, "no payment channel");

    // Below the minimum.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING - 1, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 3, now() + 60)).await;
    refused(r, 402, "asks at least 1000000");

    // Without the prices it agrees to, or with other prices than the provider's.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, priced(None), 7, now() + 60)).await;
    refused(r, 400, "must name the prices");
    let dearer = tpod_billing::PriceTable::from_rows([("cpu", "0", "5")]).unwrap().to_proto("", "");
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, priced(Some(dearer)), 8, now() + 60)).await;
    refused(r, 409, "prices changed since the quote");
    f.assert_nothing_kept();

    // Naming another enclave signer.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, Address::repeat_byte(7)).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 4, now() + 60)).await;
    refused(r, 402, "enclave signs as");

    // Paid properly, but the image keys are not sealed to this enclave (tests/delivery.rs goes
    // through every way sealing can be wrong): refused, nothing kept.
    let pod_id = B256::random();
    f.channel(info.provider_address, pod_id, MIN_FUNDING, info.enclave_signer).await;
    let r = f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 5, now() + 60)).await;
    refused(r, 400, "image of container \"web\": cannot open");
    f.assert_nothing_kept();
    let status = pb::provision_request::Action::Status(pb::Status {});
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, status, 6, now() + 60)).await, 404, "no pod");
}

#[tokio::test]
async fn replays_stale_tampered_and_foreign_requests_are_refused() {
    let f = fixture("tpa2", "10.232.0.0/16").await;
    let pod_id = B256::random();

    // The first request is authenticated (then refused for payment); its replay is refused as such.
    let request = signed(&f.chain, &f.publisher, pod_id, pod(), 77, now() + 60);
    refused(f.send(request.clone()).await, 402, "no payment channel");
    refused(f.send(request).await, 401, "replayed");

    // Expired, or valid for longer than the provider remembers nonces.
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 78, now() - 1)).await, 401, "expired");
    refused(f.send(signed(&f.chain, &f.publisher, pod_id, pod(), 79, now() + 3600)).await, 401, "at most 300s");

    // A payload changed after signing no longer matches its signature.
    let mut tampered = signed(&f.chain, &f.publisher, pod_id, pod(), 80, now() + 60);
    let last = tampered.payload.len() - 1;
    tampered.payload[last] ^= 1;
    let err = f.send(tampered).await.expect_err("tampered request accepted");
    assert!(err.code == 401 || err.code == 400, "{err:?}");

    // Signed by someone else than the publisher it names.
    let mut foreign = signed(&f.chain, &PrivateKeySigner::random(), pod_id, pod(), 81, now() + 60);
    let honest = signed(&f.chain, &f.publisher, pod_id, pod(), 81, now() + 60);
    foreign.payload = honest.payload;
    refused(f.send(foreign).await, 401, "signed by");

    // Garbage payloads are refused cleanly; the provider keeps serving.
    let garbage = pb::SignedRequest { version: 1, payload: vec![0xff; 40], signature: vec![1; 65] };
    refused(f.send(garbage).await, 400, "bad request");
    let quote = f
        .client
        .quote(f.peer, f.addr.clone(), pb::QuoteRequest { version: 1, resources: None, hostnames: Vec::new() })
        .await;
    assert!(quote.unwrap().available);
}

#[tokio::test]
async fn quote_reports_terms_and_refuses_what_does_not_fit() {
    let f = fixture("tpa3", "10.233.0.0/16").await;
    let info = f.info();
    let ask = |cpu_millis, memory_bytes| pb::QuoteRequest {
        version: 1,
        resources: Some(pb::Resources { cpu_millis, memory_bytes, gpu: 0, storage_bytes: 0, pids: 0 }),
        hostnames: Vec::new(),
    };
    let q = f.client.quote(f.peer, f.addr.clone(), ask(500, 1 << 20)).await.unwrap();
    assert!(q.available, "{}", q.reason);
    assert_eq!(q.provider_address.parse::<Address>().unwrap(), info.provider_address);
    assert_eq!(q.min_funding, MIN_FUNDING.to_string());
    assert_eq!(q.domain, "pods.test");
    let q = f.client.quote(f.peer, f.addr.clone(), ask(1500, 1 << 20)).await.unwrap();
    assert!(!q.available);
    assert!(q.reason.contains("only cpu 1000m"), "{}", q.reason);
    assert!(Path::new(&f.data).join("provider.json").exists());
}

#[tokio::test]
async fn attestation_binds_the_enclave_keys_and_the_running_config() {
    let f = fixture("tpa4", "10.234.0.0/16").await;
    let attested = f.attested().await;
    let binding = attested.binding;
    assert_eq!(Address::from(binding.enclave_signer), f.info().enclave_signer);
    // The encryption key is the one in the enclave's key file, not one made up for the answer.
    let sealing = tpod_provider::enclave::load_or_generate_sealing(&f.data.join("enclave-seal.key")).unwrap();
    assert_eq!(&binding.enclave_encryption_key, sealing.public().as_bytes());
    let config = tpod_attestation::binding::sha256_file(&f.config).unwrap();
    assert_eq!(binding.measurement.config, config);
    assert_eq!(binding.peer_id(), f.peer);
}
