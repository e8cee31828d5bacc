//! Providers list themselves in the Registry: real daemons on a throwaway anvil chain register
//! their pricing table (or reuse an identical one), publish a signed profile the Registry entry
//! names, follow a change of prices, survive an account without gas and an RPC that is down (a
//! daemon told the chain id and token starts and serves without it, and registers only on the
//! chain it was told of), and `tpod-provider deregister` removes the entry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use tpod_chain::Chain;
use tpod_chain::client::PricingTable;
use tpod_devnet::Throwaway;
use tpod_market::ProfileUri;
use tpod_net::{Client, Multiaddr, PeerId};
use tpod_provider::config::Settings;
use tpod_provider::daemon::Daemon;
use tpod_provider::registration::{self, Listing, ProfileSlot, Registrar, Schedule};
use tpod_wire::pb;

fn anvil_bin() -> Option<PathBuf> {
    if tpod_devnet::anvil::locate(None).is_ok() {
        return None;
    }
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

const PRICES: &[(&str, &str, &str)] = &[("cpu", "1000", "2000"), ("memory", "30", "0"), ("egress", "0", "7")];

/// A provider's directory: its config file, key and data.
struct Setup {
    dir: tempfile::TempDir,
    key: PrivateKeySigner,
    bridge: &'static str,
    subnet: &'static str,
    listen: String,
}

impl Drop for Setup {
    /// A daemon that ran from this setup made its bridge and firewall tables; they go, so a later
    /// network on the subnet keeps its route.
    fn drop(&mut self) {
        let Ok(settings) = Settings::load(&self.path()) else { return };
        // The runtime is asked directly (these tests start no pod): the daemon's store may stay
        // locked until its aborted tasks run again, after this.
        let config = tpod_runtime::LocalConfig {
            bridge: settings.config.runtime.bridge.clone(),
            subnet: settings.subnet,
            ..tpod_runtime::LocalConfig::new(&settings.config.data_dir, tpod_runtime::VolumeKey::random())
        };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async { tpod_runtime::LocalRuntime::new(config).ok()?.remove_network().await.ok() })
        })
        .join();
    }
}

impl Setup {
    fn new(key: PrivateKeySigner, bridge: &'static str, subnet: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("provider.key"), format!("0x{}", alloy::hex::encode(key.to_bytes()))).unwrap();
        // A fixed port, so that a restart keeps the address (and the profile can stay the same).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { dir, key, bridge, subnet, listen: format!("/ip4/127.0.0.1/tcp/{port}") }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("provider.toml")
    }

    /// Writes the config for `net` with `prices`.
    fn write(&self, rpc: &str, payment: Address, registry: Address, prices: &[(&str, &str, &str)]) -> Settings {
        self.write_with(rpc, payment, registry, "", prices)
    }

    /// Writes a config that names the chain id and token, so the daemon starts without the chain.
    fn write_known(&self, rpc: &str, chain_id: u64, contracts: tpod_chain::ContractAddresses) -> Settings {
        let known = format!("chain_id = {chain_id}\ntoken = \"{}\"\n", contracts.token);
        self.write_with(rpc, contracts.payment, contracts.registry, &known, PRICES)
    }

    /// Writes the config, with `chain` added to its `[chain]` section.
    fn write_with(
        &self,
        rpc: &str,
        payment: Address,
        registry: Address,
        chain: &str,
        prices: &[(&str, &str, &str)],
    ) -> Settings {
        let pricing: String = prices
            .iter()
            .map(|(r, res, used)| {
                format!("[[pricing]]\nresource = \"{r}\"\nreservation = \"{res}\"\nusage = \"{used}\"\n")
            })
            .collect();
        let text = format!(
            r#"
data_dir = "data"
listen = "{listen}"
[chain]
rpc_url = "{rpc}"
payment = "{payment}"
registry = "{registry}"
key_file = "provider.key"
{chain}[profile]
region = "eu-west"
contact = "ops@provider.test"
cpu_model = "Test CPU 9000"
[ingress]
http = "127.0.0.1:0"
domain = "pods.test"
tcp_bind = "127.0.0.1"
[capacity]
cpu = "2"
memory = "2Gi"
storage = "3Gi"
[terms]
min_funding = "5000"
min_unlock_delay_secs = 90
{pricing}
[runtime]
bridge = "{bridge}"
subnet = "{subnet}"
log_cap = "1Mi"
[attestation]
tee = "simulated"
simulated_root_key = "simulated-tee-root.key"
"#,
            listen = self.listen,
            bridge = self.bridge,
            subnet = self.subnet,
        );
        std::fs::write(self.path(), text).unwrap();
        Settings::load(&self.path()).unwrap()
    }

    fn write_for(&self, net: &Throwaway, prices: &[(&str, &str, &str)]) -> Settings {
        self.write(&net.file.rpc_url, net.file.contracts.payment, net.file.contracts.registry, prices)
    }
}

/// Starts the daemon, waiting for a stopped one on the same data directory to let go of it.
async fn start(settings: Settings) -> Daemon {
    for _ in 0..100 {
        match tpod_provider::daemon::start(settings.clone()).await {
            Ok(daemon) => return daemon,
            Err(e) => {
                tracing::debug!(%e, "provider not started yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("the provider did not start");
}

/// Polls `check` every 200 ms until it gives a value, for at most `secs` seconds.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, secs: u64, mut check: impl FnMut() -> F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A read-only view of the chain (any key will do).
async fn observer(net: &Throwaway) -> Chain {
    Chain::connect(&net.file.rpc_url, PrivateKeySigner::random(), net.file.contracts).await.unwrap()
}

/// Waits until `provider` offers exactly one table and its profile names it; returns the table
/// id and the profile URI.
async fn listed(chain: &Chain, provider: Address) -> (U256, String) {
    eventually("the provider to be listed", 60, || async {
        let subs = chain.subscriptions_of(provider).await.ok()?;
        let uri = chain.profile_of(provider).await.ok()??;
        (subs.len() == 1).then(|| (subs[0], uri))
    })
    .await
}

fn peer_addr(daemon: &Daemon) -> (PeerId, Multiaddr) {
    (daemon.info().peer_id.parse().unwrap(), daemon.info().multiaddr.parse().unwrap())
}

/// The profile the daemon serves, checked as a publisher checks it against the Registry entry.
async fn fetched_profile(
    client: &Client,
    daemon: &Daemon,
    chain: &Chain,
    provider: Address,
    uri: &str,
) -> pb::ProviderProfile {
    let (peer, addr) = peer_addr(daemon);
    let response = client.profile(peer, addr, pb::ProfileRequest { version: 1 }).await.unwrap();
    let Some(pb::profile_response::Result::Profile(signed)) = response.result else {
        panic!("no profile: {response:?}")
    };
    let uri: ProfileUri = uri.parse().unwrap();
    assert_eq!(uri.peer, peer, "the URI names the serving peer");
    tpod_market::profile::verify(&signed, &uri, provider, chain.chain_id(), chain.contracts().registry).unwrap()
}

async fn quoted_table(client: &Client, daemon: &Daemon) -> pb::PricingTable {
    let (peer, addr) = peer_addr(daemon);
    let quote = client
        .quote(peer, addr, pb::QuoteRequest { version: 1, resources: None, hostnames: Vec::new() })
        .await
        .unwrap();
    quote.pricing.unwrap()
}

/// The quote's table is the registered one, field for field.
fn assert_quote_is(quoted: &pb::PricingTable, registered: &PricingTable) {
    assert_eq!(quoted.token.parse::<Address>().unwrap(), registered.token);
    assert_eq!(quoted.tee_type, registered.tee_type);
    assert_eq!(quoted.cpu_model, registered.cpu_model);
    let mut rows: Vec<(String, U256, U256)> = quoted
        .prices
        .iter()
        .map(|p| (p.resource.clone(), p.reservation.parse().unwrap(), p.usage.parse().unwrap()))
        .collect();
    let mut expected: Vec<(String, U256, U256)> =
        registered.prices.iter().map(|p| (p.resource.clone(), p.reservation, p.usage)).collect();
    rows.sort();
    expected.sort();
    assert_eq!(rows, expected);
}

/// Moves the chain's clock on by a block a minute later, so a profile issued now would differ.
async fn later_block(chain: &Chain) {
    chain.provider().raw_request::<_, i64>("evm_increaseTime".into(), (60,)).await.unwrap();
    chain.provider().raw_request::<_, String>("evm_mine".into(), ()).await.unwrap();
}

async fn fund(net: &Throwaway, who: Address) {
    tpod_devnet::deploy::set_native_balance(&net.file.rpc_url, who, tpod_devnet::whole(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_started_provider_is_listed_with_the_profile_it_serves_and_identical_prices_share_a_table() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.unwrap();
    let chain = observer(&net).await;
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();

    let a = Setup::new(net.file.account("provider").unwrap().signer().unwrap(), "tpr1", "10.221.0.0/16");
    let settings = a.write_for(&net, PRICES);
    let daemon = start(settings.clone()).await;
    let (table, uri) = listed(&chain, a.key.address()).await;
    assert_eq!(table, U256::from(1));

    // The table is the configuration's, in the Payment contract's token, and the quote says so too.
    let registered = chain.pricing_table(table).await.unwrap();
    assert_eq!(registered.token, net.file.contracts.token);
    assert_eq!(registered.tee_type, "simulated");
    assert_eq!(registered.cpu_model, "Test CPU 9000");
    assert_eq!(registered.prices.len(), 5, "every priced resource, free ones included");
    assert_quote_is(&quoted_table(&client, &daemon).await, &registered);
    assert_eq!(tpod_billing::PriceTable::from_proto(&quoted_table(&client, &daemon).await).unwrap(), settings.pricing);

    // The served profile is the one the URI names, signed by the provider's account.
    let profile = fetched_profile(&client, &daemon, &chain, a.key.address(), &uri).await;
    assert_eq!(profile.pricing_tables, vec![1]);
    assert_eq!(profile.multiaddrs, vec![daemon.info().multiaddr.clone()]);
    assert_eq!((profile.region.as_str(), profile.contact.as_str()), ("eu-west", "ops@provider.test"));
    assert_eq!(profile.tee, "simulated");
    assert_eq!(profile.domain, "pods.test");
    assert_eq!((profile.min_funding.as_str(), profile.min_unlock_delay_secs), ("5000", 90));
    let capacity = profile.capacity.unwrap();
    assert_eq!((capacity.cpu_millis, capacity.memory_bytes, capacity.storage_bytes), (2000, 2 << 30, 3 << 30));
    let binary = tpod_attestation::binding::sha256_file(Path::new("/proc/self/exe")).unwrap();
    assert_eq!(profile.provider_binary_sha256, binary.to_vec());
    let head = chain.provider().get_block_number().await.unwrap();
    let block = chain.provider().get_block_by_number(head.into()).await.unwrap().unwrap();
    assert!(profile.issued_at_unix > 0 && profile.issued_at_unix <= block.header.timestamp);

    // A second provider with the same prices offers the same table; none is registered.
    let b_key = PrivateKeySigner::random();
    fund(&net, b_key.address()).await;
    let b = Setup::new(b_key, "tpr2", "10.222.0.0/16");
    let _b_daemon =
        start(b.write_for(&net, &[("egress", "0", "7"), ("cpu", "1000", "2000"), ("memory", "30", "0")])).await;
    let (b_table, _) = listed(&chain, b.key.address()).await;
    assert_eq!(b_table, table);
    assert_eq!(chain.pricing_table_count().await.unwrap(), U256::from(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_follows_new_prices_and_deregister_empties_the_entry() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.unwrap();
    let chain = observer(&net).await;
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    let p = Setup::new(net.file.account("provider").unwrap().signer().unwrap(), "tpr3", "10.223.0.0/16");
    let me = p.key.address();

    let daemon = start(p.write_for(&net, PRICES)).await;
    let (first, uri) = listed(&chain, me).await;

    // The same configuration again, a minute later: the same profile and URI, and nothing sent.
    drop(daemon);
    later_block(&chain).await;
    let nonce = chain.provider().get_transaction_count(me).await.unwrap();
    let daemon = start(Settings::load(&p.path()).unwrap()).await;
    eventually("the profile to be served", 30, || async {
        let (peer, addr) = peer_addr(&daemon);
        let r = client.profile(peer, addr, pb::ProfileRequest { version: 1 }).await.ok()?;
        matches!(r.result, Some(pb::profile_response::Result::Profile(_))).then_some(())
    })
    .await;
    fetched_profile(&client, &daemon, &chain, me, &uri).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(chain.provider().get_transaction_count(me).await.unwrap(), nonce, "an unchanged entry costs nothing");
    assert_eq!(chain.profile_of(me).await.unwrap().as_deref(), Some(uri.as_str()));

    // New prices: a new table, subscribed, the old one dropped, a new profile naming it.
    drop(daemon);
    let settings = p.write_for(&net, &[("cpu", "1500", "2000"), ("memory", "30", "0")]);
    let daemon = start(settings.clone()).await;
    let (second, new_uri) = eventually("the new table to replace the old", 60, || async {
        let listed = listed(&chain, me).await;
        (listed.0 != first).then_some(listed)
    })
    .await;
    assert_eq!(second, U256::from(2));
    assert!(!chain.is_subscribed(me, first).await.unwrap());
    assert_ne!(new_uri, uri);
    let registered = chain.pricing_table(second).await.unwrap();
    assert_quote_is(&quoted_table(&client, &daemon).await, &registered);
    let profile = fetched_profile(&client, &daemon, &chain, me, &new_uri).await;
    assert_eq!(profile.pricing_tables, vec![2]);

    // Deregistered with the daemon stopped: no profile, no subscription; a second time is a no-op.
    drop(daemon);
    let deregister = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tpod-provider"))
            .args(["deregister", "--config"])
            .arg(p.path())
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, stdout) = deregister();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(&format!("removed provider {me}")), "{stdout}");
    assert!(stdout.contains("unsubscribed from pricing table(s) 2"), "{stdout}");
    assert_eq!(chain.profile_of(me).await.unwrap(), None);
    assert!(chain.subscriptions_of(me).await.unwrap().is_empty());
    let (code, stdout) = deregister();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("is not listed in the Registry"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_without_gas_serves_quotes_and_registers_once_funded() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.unwrap();
    let chain = observer(&net).await;
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    let broke = PrivateKeySigner::random();
    let me = broke.address();
    let p = Setup::new(broke, "tpr4", "10.224.0.0/16");
    let daemon = start(p.write_for(&net, PRICES)).await;

    // It serves while it cannot pay for its listing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(quoted_table(&client, &daemon).await.prices.len() == 5);
    assert_eq!(chain.profile_of(me).await.unwrap(), None);
    assert_eq!(chain.pricing_table_count().await.unwrap(), U256::ZERO);

    fund(&net, me).await;
    let (table, uri) = listed(&chain, me).await;
    assert_quote_is(&quoted_table(&client, &daemon).await, &chain.pricing_table(table).await.unwrap());
    fetched_profile(&client, &daemon, &chain, me, &uri).await;
}

/// The registration task alone: pointed at an RPC that is down, it keeps retrying, and lists the
/// provider once a chain with the contracts answers there.
#[tokio::test(flavor = "multi_thread")]
async fn registration_retries_until_the_rpc_is_up_and_repairs_drift() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    // Contracts land at addresses fixed by their deployer and its nonces: token, Payment, Registry.
    let deployer = PrivateKeySigner::from_bytes(&[0x11; 32].into()).unwrap();
    let (payment, registry) = (deployer.address().create(1), deployer.address().create(2));
    let provider = PrivateKeySigner::random();
    let p = Setup::new(provider.clone(), "tpr5", "10.225.0.0/16");
    let settings = p.write(&url, payment, registry, PRICES);
    // Where the signed profile is kept between runs (the daemon would have made it).
    std::fs::create_dir_all(&settings.config.data_dir).unwrap();
    let peer = tpod_net::generate_keypair().public().to_peer_id();
    let listing = Listing::new(&settings, peer, &p.listen.parse().unwrap(), [7; 32]);
    let slot = ProfileSlot::default();
    let schedule = Schedule {
        repair: Duration::from_secs(3600),
        first_retry: Duration::from_millis(200),
        max_retry: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(60),
    };
    let task = tokio::spawn(Registrar::new(listing.clone(), provider.clone(), slot.clone()).run(schedule));

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(slot.read().unwrap().is_none(), "nothing is published without the chain");
    let dir = tempfile::tempdir().unwrap();
    let _anvil = tpod_devnet::anvil::AnvilProcess::spawn(&tpod_devnet::anvil::AnvilOptions {
        bin: tpod_devnet::anvil::locate(anvil_bin().as_deref()).unwrap(),
        port,
        chain_id: 31337,
        state: None,
        log: dir.path().join("anvil.log"),
        detach: false,
    })
    .await
    .unwrap();
    tpod_devnet::deploy::set_native_balance(&url, deployer.address(), tpod_devnet::whole(10)).await.unwrap();
    tpod_devnet::deploy::set_native_balance(&url, provider.address(), tpod_devnet::whole(10)).await.unwrap();
    let contracts = tpod_devnet::deploy::deploy_contracts(&url, deployer).await.unwrap();
    assert_eq!((contracts.payment, contracts.registry), (payment, registry));

    let chain = Chain::connect(&url, provider.clone(), contracts).await.unwrap();
    let (table, uri) = listed(&chain, provider.address()).await;
    let served = slot.read().unwrap().clone().unwrap();
    assert_eq!(tpod_chain::profile::profile_hash(&served.profile).0, uri.parse::<ProfileUri>().unwrap().sha256);
    task.abort();

    // Drift: the entry is removed behind its back; the next reconcile puts it back as it was.
    chain.remove_provider().await.unwrap();
    later_block(&chain).await;
    let mut registrar = Registrar::new(listing, provider.clone(), slot.clone());
    let outcome = registrar.reconcile().await.unwrap();
    assert!(outcome.profile_set && outcome.subscribed && !outcome.registered_table, "{outcome:?}");
    assert_eq!((outcome.table, outcome.uri.as_str()), (table, uri.as_str()), "same table, same profile");
    assert_eq!(chain.profile_of(provider.address()).await.unwrap().as_deref(), Some(uri.as_str()));
    let again = registrar.reconcile().await.unwrap();
    assert!(!again.changed(), "{again:?}");

    // Deregistering through the library says what it removed.
    let removed = registration::deregister(&settings, provider.clone()).await.unwrap();
    assert_eq!(removed, registration::Deregistered::Removed { uri, tables: vec![table] });
    assert_eq!(registration::deregister(&settings, provider).await.unwrap(), registration::Deregistered::NotRegistered);
}

/// The profile request's refusal code, or 0 when a profile is served.
async fn profile_refusal(client: &Client, daemon: &Daemon) -> u32 {
    let (peer, addr) = peer_addr(daemon);
    match client.profile(peer, addr, pb::ProfileRequest { version: 1 }).await {
        Ok(_) => 0,
        Err(e) => e.refusal().unwrap_or_else(|| panic!("not a refusal: {e}")).0,
    }
}

/// The whole daemon, started with its RPC down: it attests and quotes (with the configured chain
/// id and token) at once, has no profile to serve until it can find its table, and once a chain
/// with the contracts answers at that URL it lists itself within the backoff.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_started_with_the_rpc_down_serves_and_registers_once_it_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    // Contracts land at addresses fixed by their deployer and its nonces: token, Payment, Registry.
    let deployer = PrivateKeySigner::from_bytes(&[0x12; 32].into()).unwrap();
    let d = deployer.address();
    let expected = tpod_chain::ContractAddresses { token: d.create(0), payment: d.create(1), registry: d.create(2) };
    let provider = PrivateKeySigner::random();
    let me = provider.address();
    let p = Setup::new(provider.clone(), "tpr6", "10.226.0.0/16");
    let settings = p.write_known(&url, 31337, expected);

    // Without the chain id and token it does not start, and says what would let it.
    let unknown = Setup::new(PrivateKeySigner::random(), "tpr7", "10.227.0.0/16");
    let err = tpod_provider::daemon::start(unknown.write(&url, expected.payment, expected.registry, PRICES))
        .await
        .err()
        .expect("a daemon without the chain id and token needs the chain");
    let err = err.to_string();
    assert!(err.contains("cannot reach the chain RPC") && err.contains("set [chain] chain_id and token"), "{err}");

    // With them it starts at once (the first try: nothing waits for the node).
    let daemon = tpod_provider::daemon::start(settings).await.unwrap();
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    let (peer, addr) = peer_addr(&daemon);
    let evidence = client.attest(peer, addr.clone(), pb::AttestRequest { version: 1, nonce: vec![9; 32] }).await;
    assert!(matches!(evidence.unwrap().result, Some(pb::attest_response::Result::Evidence(_))));
    let quote = client
        .quote(peer, addr, pb::QuoteRequest { version: 1, resources: None, hostnames: Vec::new() })
        .await
        .unwrap();
    assert!(quote.available, "{quote:?}");
    assert_eq!(quote.chain_id, 31337);
    assert_eq!(Address::from_slice(&quote.token), expected.token);
    assert_eq!(quote.payment_contract.parse::<Address>().unwrap(), expected.payment);
    assert_eq!(quote.provider_address.parse::<Address>().unwrap(), me);
    assert_eq!(quote.pricing.as_ref().unwrap().token.parse::<Address>().unwrap(), expected.token);
    // The profile names the pricing table's id, which only the chain knows.
    assert_eq!(profile_refusal(&client, &daemon).await, tpod_wire::codes::UNAVAILABLE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(profile_refusal(&client, &daemon).await, tpod_wire::codes::UNAVAILABLE);

    let dir = tempfile::tempdir().unwrap();
    let _anvil = tpod_devnet::anvil::AnvilProcess::spawn(&tpod_devnet::anvil::AnvilOptions {
        bin: tpod_devnet::anvil::locate(anvil_bin().as_deref()).unwrap(),
        port,
        chain_id: 31337,
        state: None,
        log: dir.path().join("anvil.log"),
        detach: false,
    })
    .await
    .unwrap();
    tpod_devnet::deploy::set_native_balance(&url, deployer.address(), tpod_devnet::whole(10)).await.unwrap();
    tpod_devnet::deploy::set_native_balance(&url, me, tpod_devnet::whole(10)).await.unwrap();
    let contracts = tpod_devnet::deploy::deploy_contracts(&url, deployer).await.unwrap();
    assert_eq!(contracts, expected);

    // Listed within the backoff (1 s doubling), the profile it serves is the one the URI names,
    // and the quote's table is the registered one.
    let chain = Chain::connect(&url, PrivateKeySigner::random(), contracts).await.unwrap();
    let (table, uri) = listed(&chain, me).await;
    assert!(chain.is_subscribed(me, table).await.unwrap());
    let profile = fetched_profile(&client, &daemon, &chain, me, &uri).await;
    assert_eq!(
        (profile.chain_id, profile.pricing_tables.as_slice()),
        (31337, [u64::try_from(table).unwrap()].as_slice())
    );
    assert_quote_is(&quoted_table(&client, &daemon).await, &chain.pricing_table(table).await.unwrap());
}

/// A daemon told another chain id, or another token than the Payment contract's, serves but
/// sends nothing to the chain it finds.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_told_another_chain_or_token_registers_nothing() {
    let net = tpod_devnet::throwaway(anvil_bin().as_deref()).await.unwrap();
    let chain = observer(&net).await;
    let client = Client::connect(tpod_net::generate_keypair()).unwrap();
    let c = net.file.contracts;
    // Another contract with code stands in for the token: only Payment.token() tells them apart.
    let cases = [
        ("tpr8", "10.228.0.0/16", net.file.chain_id + 1, c),
        ("tpr9", "10.229.0.0/16", net.file.chain_id, tpod_chain::ContractAddresses { token: c.registry, ..c }),
    ];
    let mut running = Vec::new();
    for (bridge, subnet, chain_id, contracts) in cases {
        let key = PrivateKeySigner::random();
        fund(&net, key.address()).await;
        let p = Setup::new(key, bridge, subnet);
        let daemon = tpod_provider::daemon::start(p.write_known(&net.file.rpc_url, chain_id, contracts)).await.unwrap();
        let quote = quoted_table(&client, &daemon).await;
        assert_eq!(quote.token.parse::<Address>().unwrap(), contracts.token, "it quotes what it was told");
        running.push((p, daemon));
    }
    // Several check and retry rounds (1 s doubling).
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (p, daemon) in &running {
        let me = p.key.address();
        assert_eq!(chain.provider().get_transaction_count(me).await.unwrap(), 0, "nothing sent");
        assert_eq!(chain.profile_of(me).await.unwrap(), None);
        assert_eq!(profile_refusal(&client, daemon).await, tpod_wire::codes::UNAVAILABLE);
    }
    assert_eq!(chain.pricing_table_count().await.unwrap(), U256::ZERO);
}
