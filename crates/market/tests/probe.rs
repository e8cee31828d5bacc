//! Probing against real libp2p providers (stub handlers serving a signed profile and a quote):
//! an honest provider is ok, one quoting other prices, one with a profile signed by another
//! key, and one that does not answer are skipped with their reasons; a region filter drops the
//! others after their profile is fetched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use futures::stream::BoxStream;
use tpod_billing::PriceTable;
use tpod_chain::client::{PricingTable, ResourcePrice};
use tpod_market::rank::billing_prices;
use tpod_market::{Candidate, Network, ProbeOptions, Reservation, Status, probe};
use tpod_net::{Client, Handler, PeerId, Provider};
use tpod_wire::pb;

const CHAIN: u64 = 31337;
const NET: Network =
    Network { chain_id: CHAIN, registry: Address::repeat_byte(0x42), payment: Address::repeat_byte(0x43) };

struct Stub {
    signed: pb::SignedProfile,
    account: Address,
    quoted: PriceTable,
}

impl Handler for Stub {
    async fn attest(&self, _: PeerId, _: pb::AttestRequest) -> pb::AttestResponse {
        pb::AttestResponse::default()
    }
    async fn quote(&self, _: PeerId, request: pb::QuoteRequest) -> pb::QuoteResponse {
        pb::QuoteResponse {
            version: 1,
            available: true,
            free: request.resources,
            pricing: Some(self.quoted.to_proto("0x00", "simulated")),
            payment_contract: NET.payment.to_string(),
            chain_id: CHAIN,
            provider_address: self.account.to_string(),
            min_funding: "0".into(),
            ..Default::default()
        }
    }
    async fn provision(&self, _: PeerId, _: pb::SignedRequest) -> pb::ProvisionResponse {
        pb::ProvisionResponse::default()
    }
    async fn profile(&self, _: PeerId, _: pb::ProfileRequest) -> pb::ProfileResponse {
        pb::ProfileResponse { version: 1, result: Some(pb::profile_response::Result::Profile(self.signed.clone())) }
    }
    async fn logs(&self, _: PeerId, _: pb::SignedRequest) -> Result<BoxStream<'static, pb::LogChunk>, pb::Error> {
        Err(pb::Error { code: 404, message: "no logs".into() })
    }
    async fn blob_offer(&self, _: PeerId, _: pb::BlobOffer) -> Result<pb::BlobState, pb::Error> {
        Err(pb::Error { code: 404, message: "no blobs".into() })
    }
    async fn blob_chunk(&self, _: PeerId, _: &str, _: u64, _: pb::BlobChunk) -> Result<pb::BlobState, pb::Error> {
        Err(pb::Error { code: 404, message: "no blobs".into() })
    }
}

fn table(cpu: u64) -> PricingTable {
    PricingTable {
        token: Address::repeat_byte(0xee),
        tee_type: "simulated".into(),
        cpu_model: String::new(),
        prices: vec![ResourcePrice { resource: "cpu".into(), reservation: U256::from(cpu), usage: U256::ZERO }],
    }
}

/// A provider listening on loopback whose profile says `region`; `signer` signs its profile
/// (the account itself unless testing a forgery); it quotes `quoted_cpu`.
async fn provider(region: &str, quoted_cpu: u64, forged: bool, table_id: u64, cost: u64) -> (Provider, Candidate) {
    let account = PrivateKeySigner::random();
    let keypair = tpod_net::generate_keypair();
    let peer = keypair.public().to_peer_id();
    // Listen first, to know the port the profile names.
    let placeholder = pb::SignedProfile::default();
    let quoted = billing_prices(&table(quoted_cpu)).unwrap();
    let mut stub = Stub { signed: placeholder, account: account.address(), quoted };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let profile = pb::ProviderProfile {
        version: 1,
        chain_id: CHAIN,
        registry: NET.registry.to_string(),
        payment_address: account.address().to_string(),
        peer_id: peer.to_string(),
        multiaddrs: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        region: region.into(),
        tee: "simulated".into(),
        provider_binary_sha256: vec![0; 32],
        pricing_tables: vec![table_id],
        ..Default::default()
    };
    let (mut signed, uri) = tpod_market::profile::sign(profile, &account, CHAIN, NET.registry).unwrap();
    if forged {
        let other = PrivateKeySigner::random();
        signed.signature = tpod_chain::profile::sign(&signed.profile, &other, CHAIN, NET.registry).unwrap().to_vec();
    }
    stub.signed = signed;
    let listening =
        Provider::listen(keypair, format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(), stub).await.unwrap();
    let registered = table(10);
    let candidate = Candidate {
        provider: account.address(),
        profile_uri: uri.to_string(),
        table_id,
        prices: billing_prices(&registered).unwrap(),
        table: registered,
        cost_per_hour: U256::from(cost),
    };
    (listening, candidate)
}

#[tokio::test]
async fn each_candidate_is_ok_or_skipped_with_its_reason() {
    let (_honest, honest) = provider("eu-west", 10, false, 1, 100).await;
    let (_dearer, dearer) = provider("eu-west", 12, false, 2, 200).await;
    let (_forger, forger) = provider("eu-west", 10, true, 3, 300).await;
    let (gone, mut silent) = provider("eu-west", 10, false, 4, 400).await;
    drop(gone);
    silent.cost_per_hour = U256::from(400);
    let (_far, far) = provider("us-east", 10, false, 5, 50).await;
    let candidates = vec![far.clone(), honest.clone(), dearer.clone(), forger.clone(), silent.clone()];

    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    let options = ProbeOptions { timeout: Duration::from_secs(3), ..ProbeOptions::default() };
    let probed = probe(&client, &NET, &candidates, &Reservation::ONE_CPU_ONE_GIB, &options).await;
    let status: Vec<_> = probed.iter().map(|p| (p.candidate.table_id, p.status.clone())).collect();
    assert_eq!(status.len(), 5, "{status:?}");
    assert_eq!(status[0], (5, Status::Ok));
    assert_eq!(status[1], (1, Status::Ok));
    assert!(probed[1].latency_ms.is_some());
    assert_eq!(probed[1].profile.as_ref().unwrap().region, "eu-west");
    assert_eq!(
        status[2],
        (
            2,
            Status::Skipped(
                "quoted prices differ from its registry table 2: cpu reservation 12 quoted vs 10 registered".into()
            )
        )
    );
    assert!(matches!(&status[3].1, Status::Skipped(why) if why.contains("is signed by")), "{status:?}");
    assert!(matches!(&status[4].1, Status::Skipped(why) if why.contains("no answer")), "{status:?}");

    // Only eu-west, 2 wanted: the us-east provider is asked and dropped, the next are asked.
    let options = ProbeOptions { limit: 2, region: Some("EU-West".into()), ..options };
    let probed = probe(&client, &NET, &candidates, &Reservation::ONE_CPU_ONE_GIB, &options).await;
    let ids: Vec<_> = probed.iter().map(|p| p.candidate.table_id).collect();
    assert_eq!(ids, [1, 2]);
}
