//! `tpod deploy | status | logs | update | delete`: a publisher's pods on a provider.
//!
//! `deploy` checks the manifest, reads its images and secrets and encrypts the images (see
//! [`crate::delivery`]), asks the provider for a quote, uploads the encrypted blobs the provider
//! lacks, seals the keys and secrets to the quoted enclave key, creates and funds the payment
//! channel on chain (approve + create), then sends the signed pod. Every request about a pod is signed (EIP-712) by the publisher key
//! that owns the channel, with a fresh nonce and a short expiry.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use prost::Message;
use serde_json::json;
use tpod_attestation::Attested;
use tpod_chain::Chain;
use tpod_chain::client::NewChannel;
use tpod_chain::request::PodRequest;
use tpod_manifest::{Manifest, RestartPolicy, VolumeSource};
use tpod_net::{Client, Multiaddr, PeerId};
use tpod_wire::pb;

use crate::delivery::{
    LocalImage, RegistryArgs, Sealer, encrypt_images, process_spec, read_images, read_secrets, sealing_key, upload,
};
use crate::deployments::{Deployment, Deployments};

/// How long a signed request stays valid.
const REQUEST_VALIDITY: Duration = Duration::from_secs(120);

/// Which provider, key and network a command uses.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The provider, as `<peer-id>@<multiaddr>` (default: the devnet's provider).
    #[arg(long, value_name = "PEER@ADDR", global = true)]
    pub provider: Option<String>,
    /// A file holding the publisher's private key in hex, for the devnet's throwaway accounts
    /// (default: --account, else the devnet's publisher).
    #[arg(long, value_name = "FILE", env = "TPOD_KEY_FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// Which network.
    #[command(flatten)]
    pub network: crate::network::NetworkArgs,
    /// Which account signs.
    #[command(flatten)]
    pub account: crate::account::AccountArgs,
    /// Which providers to trust.
    #[command(flatten)]
    pub attest: crate::attest::AttestArgs,
}

impl Target {
    /// Where the selected network's deployment records live.
    pub(crate) fn records_dir(&self, devnet_dir: &Path) -> anyhow::Result<PathBuf> {
        crate::network::records_dir(&self.network, devnet_dir)
    }
}

/// The attested enclave encryption key: images and secrets are sealed to it.
fn enclave_key(attested: &Attested) -> anyhow::Result<tpod_crypto::PublicKey> {
    tpod_crypto::PublicKey::from_bytes(&attested.binding.enclave_encryption_key)
        .context("the attested enclave encryption key is not an X25519 key")
}

/// Options of `tpod deploy` and `tpod update`.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The pod manifest.
    pub manifest: PathBuf,
    /// The deployment's name (default: the manifest's pod name).
    #[arg(long)]
    pub name: Option<String>,
    /// Amount to fund the channel with, in token units (12.5 or 12.5TPT) or base units with the
    /// suffix `base` (12500000000000000000base) (default: --hours of reservation at the quoted
    /// prices, and at least the provider's minimum).
    #[arg(long, value_name = "AMOUNT")]
    pub amount: Option<crate::units::Amount>,
    /// Spend cap per hour, in token units or base units with the suffix `base` (default: none):
    /// the channel never pays more than this rate, whatever the provider claims.
    #[arg(long, value_name = "AMOUNT")]
    pub max_rate: Option<crate::units::Amount>,
    /// Hours of reservation to fund when no --amount is given.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// Registry credentials.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// The publisher side of one command: chain, key, network client.
pub(crate) struct Publisher {
    pub(crate) chain: Chain,
    pub(crate) key: PrivateKeySigner,
    client: Client,
    domain: Eip712Domain,
    /// The network's token, for amounts in its units.
    pub(crate) token: crate::units::Token,
    /// The network it works on.
    pub(crate) network: crate::network::Network,
}

impl Publisher {
    /// The publisher on the network `target` selects ([`crate::network::resolve`]), signing with
    /// its account ([`crate::account::signer`]); checks the chain id and the contracts, and reads
    /// the token's symbol and decimals.
    pub(crate) async fn open(devnet_dir: &Path, target: &Target) -> anyhow::Result<Self> {
        let network = crate::network::resolve(&target.network, devnet_dir)?;
        let key = crate::account::signer(&target.account, target.key_file.as_deref(), &network)?;
        let chain = crate::network::connect(&network, key.clone()).await?;
        let token = crate::units::Token::read(&chain).await?;
        let domain = tpod_chain::request::request_domain(chain.chain_id(), network.contracts.payment);
        let client = Client::connect(tpod_net::generate_keypair()).context("cannot start the libp2p client")?;
        Ok(Self { chain, key, client, domain, token, network })
    }

    /// Signs a request about `pod_id`; `build` fills in the message given (nonce, expiry).
    fn sign(&self, pod_id: B256, action: &str, build: impl FnOnce(u64, u64) -> Vec<u8>) -> pb::SignedRequest {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        // Nanoseconds: fresh for every request a publisher can send.
        let nonce = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let expiry = now.as_secs() + REQUEST_VALIDITY.as_secs();
        let payload = build(nonce, expiry);
        let signature = PodRequest::new(pod_id, action, &payload, nonce, expiry)
            .sign(&self.domain, &self.key)
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default();
        pb::SignedRequest { version: tpod_wire::VERSION, payload, signature }
    }

    /// Asks the provider for a quote for `resources`.
    pub(crate) async fn quote(
        &self,
        provider: &ProviderTarget,
        resources: pb::Resources,
    ) -> anyhow::Result<pb::QuoteResponse> {
        let request =
            pb::QuoteRequest { version: tpod_wire::VERSION, resources: Some(resources), hostnames: Vec::new() };
        self.client
            .quote(provider.peer, provider.addr.clone(), request)
            .await
            .with_context(|| format!("asking provider {} for a quote", provider.peer))
    }

    /// The libp2p client.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn provision(
        &self,
        provider: &ProviderTarget,
        pod_id: B256,
        action: pb::provision_request::Action,
    ) -> anyhow::Result<pb::PodStatus> {
        let name = match &action {
            pb::provision_request::Action::Provision(_) => "provision",
            pb::provision_request::Action::Update(_) => "update",
            pb::provision_request::Action::Delete(_) => "delete",
            pb::provision_request::Action::Status(_) => "status",
            pb::provision_request::Action::AcceptPricing(_) => "accept_pricing",
        };
        let publisher = self.key.address().to_string();
        let signed = self.sign(pod_id, name, |nonce, expiry_unix| {
            pb::ProvisionRequest {
                version: tpod_wire::VERSION,
                pod_id: pod_id.to_vec(),
                publisher,
                nonce,
                expiry_unix,
                action: Some(action),
            }
            .encode_to_vec()
        });
        let response = self
            .client
            .provision(provider.peer, provider.addr.clone(), signed)
            .await
            .with_context(|| format!("{name} request to provider {}", provider.peer))?;
        match response.result {
            Some(pb::provision_response::Result::Status(status)) => Ok(status),
            Some(pb::provision_response::Result::Error(e)) => bail!("the provider refused to {name}: {}", e.message),
            None => bail!("the provider sent an empty answer to {name}"),
        }
    }
}

/// A provider's address.
#[derive(Clone, Debug)]
pub(crate) struct ProviderTarget {
    peer: PeerId,
    addr: Multiaddr,
}

impl ProviderTarget {
    /// The provider's peer id.
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// The provider's address.
    pub(crate) fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    /// A provider at `addr`.
    pub(crate) fn new(peer: PeerId, addr: Multiaddr) -> Self {
        Self { peer, addr }
    }

    /// The provider `flag` names, else the devnet's: its first running provider (the only one
    /// of a one-provider devnet), else what its first provider last published.
    pub(crate) fn resolve(flag: Option<&str>, devnet_dir: &Path) -> anyhow::Result<Self> {
        if let Some(text) = flag {
            return Self::parse(text);
        }
        let info = match crate::devprovider::all_running(devnet_dir).into_iter().next() {
            Some(info) => info,
            None => crate::devprovider::info(devnet_dir).with_context(|| {
                format!(
                    "no provider named: give one as PEER@ADDR (`tpod providers` lists the market), or run \
                     `tpod dev up` for a devnet provider ({} is missing)",
                    crate::dev::provider_info_path(devnet_dir).display()
                )
            })?,
        };
        Self::parse(&format!("{}@{}", info.peer_id, info.multiaddr))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let (peer, addr) =
            text.split_once('@').with_context(|| format!("provider {text:?} is not <peer-id>@<multiaddr>"))?;
        Ok(Self {
            peer: peer.parse().with_context(|| format!("provider peer id {peer:?} is malformed"))?,
            addr: addr.parse().with_context(|| format!("provider address {addr:?} is not a multiaddr"))?,
        })
    }

    /// The deployment's provider. A devnet provider may have restarted on another port, so the
    /// current address of the devnet provider with the deployment's peer id is used.
    pub(crate) fn from_deployment(d: &Deployment, devnet_dir: &Path) -> anyhow::Result<Self> {
        if let Some(info) = crate::devprovider::find(devnet_dir, &d.provider_peer) {
            return Self::parse(&format!("{}@{}", info.peer_id, info.multiaddr));
        }
        Self::parse(&format!("{}@{}", d.provider_peer, d.provider_addr))
    }
}

/// The protobuf pod for a manifest, its images, secrets and processes (command, args, env)
/// sealed to one provider's enclave: nothing of them leaves in clear.
fn to_proto(manifest: &Manifest, delivery: &Delivery, sealer: &Sealer<'_>) -> anyhow::Result<pb::Pod> {
    let mut secrets = delivery.secrets.iter();
    Ok(pb::Pod {
        name: manifest.name.clone(),
        containers: manifest
            .containers
            .iter()
            .zip(&delivery.encrypted)
            .map(|(c, image)| {
                Ok(pb::Container {
                    name: c.name.clone(),
                    image: c.image.reference.clone(),
                    sealed_image: Some(sealer.image(&c.name, image)?),
                    // Sealed even when empty: the provider cannot tell a container with a process
                    // of its own from one without (only, roughly, by the ciphertext's size).
                    sealed_process: Some(sealer.process(&c.name, &process_spec(c))?),
                    // The fields that carried them in clear, which providers now refuse.
                    command: Vec::new(),
                    args: Vec::new(),
                    env: Default::default(),
                    working_dir: c.working_dir.clone().unwrap_or_default(),
                    ports: c
                        .ports
                        .iter()
                        .map(|p| pb::Port {
                            container_port: u32::from(p.container_port),
                            protocol: match p.protocol {
                                tpod_manifest::Protocol::Http => pb::port::Protocol::Http,
                                tpod_manifest::Protocol::Tcp => pb::port::Protocol::Tcp,
                            } as i32,
                            hostname: p.hostname.clone().unwrap_or_default(),
                        })
                        .collect(),
                    resources: Some(pb::Resources {
                        cpu_millis: c.resources.cpu_millis,
                        memory_bytes: c.resources.memory_bytes,
                        gpu: c.resources.gpu,
                        storage_bytes: 0,
                        pids: c.resources.pids.unwrap_or(0),
                    }),
                    volume_mounts: c
                        .volume_mounts
                        .iter()
                        .map(|m| pb::VolumeMount {
                            name: m.name.clone(),
                            mount_path: m.mount_path.clone(),
                            read_only: m.read_only,
                        })
                        .collect(),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        volumes: manifest
            .volumes
            .iter()
            .map(|v| {
                Ok(pb::Volume {
                    name: v.name.clone(),
                    kind: Some(match &v.source {
                        VolumeSource::EmptyDir { size_bytes } => {
                            pb::volume::Kind::EmptyDir(pb::volume::EmptyDir { size_bytes: size_bytes.unwrap_or(0) })
                        }
                        VolumeSource::Filesystem { size_bytes } => {
                            pb::volume::Kind::Filesystem(pb::volume::Filesystem { size_bytes: *size_bytes })
                        }
                        VolumeSource::Secret { .. } => {
                            // Read in manifest order by `read_secrets`.
                            let (name, files) = secrets.next().context("a secret volume was not read")?;
                            pb::volume::Kind::Secret(pb::volume::Secret { sealed: Some(sealer.secret(name, files)?) })
                        }
                    }),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        replicas: Some(pb::Replicas {
            min: manifest.replicas.min,
            max: manifest.replicas.max,
            idle_timeout_secs: manifest.replicas.idle_timeout_secs.unwrap_or(0),
            target_concurrency: manifest.replicas.target_concurrency.unwrap_or(0),
        }),
        sealed_by: sealer.sender.public().as_bytes().to_vec(),
        restart_policy: match manifest.restart_policy {
            RestartPolicy::Always => pb::pod::RestartPolicy::Always,
            RestartPolicy::OnFailure => pb::pod::RestartPolicy::OnFailure,
            RestartPolicy::Never => pb::pod::RestartPolicy::Never,
        }
        .into(),
    })
}

/// What a deploy or update delivers, read and encrypted before anything is paid for.
struct Delivery {
    images: Vec<LocalImage>,
    encrypted: Vec<tpod_image::EncryptedImage>,
    secrets: Vec<(String, pb::SecretFiles)>,
}

impl Delivery {
    async fn prepare(manifest: &Manifest, path: &Path, registry: &RegistryArgs, quiet: bool) -> anyhow::Result<Self> {
        let secrets = read_secrets(manifest, path)?;
        let images = read_images(manifest, path, registry).await?;
        // The provider's unpack rules, applied to the plaintext layers here: an image it would
        // refuse is refused before anything is uploaded or paid.
        for local in &images {
            tpod_image::check_layers(&local.image).with_context(|| {
                format!("the image of container {:?} would be refused by the provider", local.container)
            })?;
        }
        let encrypted = encrypt_images(&images, quiet)?;
        Ok(Self { images, encrypted, secrets })
    }
}

/// How long a provisioning pod may show no progress before `deploy` stops following it.
const PROVISION_STALL: Duration = Duration::from_secs(600);

/// Follows a pod the provider is still provisioning (unpacking its images, starting its
/// containers) until it runs or fails, showing each phase's progress unless `quiet`. Returns
/// its status then.
async fn follow_provisioning(
    publisher: &Publisher,
    provider: &ProviderTarget,
    pod_id: B256,
    mut status: pb::PodStatus,
    quiet: bool,
) -> anyhow::Result<pb::PodStatus> {
    let mut step: Option<(String, crate::progress::Step)> = None;
    let mut last_change = (Instant::now(), None::<pb::Progress>);
    let mut failures = 0u32;
    while status.state == "provisioning" {
        if let Some(p) = &status.progress {
            let name = match p.phase.as_str() {
                "unpacking" => format!("unpacking {}", p.container),
                phase => phase.to_owned(),
            };
            if step.as_ref().is_none_or(|(current, _)| *current != name) {
                if let Some((_, old)) = step.take() {
                    old.finish();
                }
                let new = crate::progress::Step::new(name.clone(), p.total_bytes, quiet);
                step = Some((name, new));
            }
            if let Some((_, s)) = &mut step {
                s.set(p.done_bytes);
            }
            if last_change.1.as_ref() != Some(p) {
                last_change = (Instant::now(), Some(p.clone()));
            }
        }
        if last_change.0.elapsed() > PROVISION_STALL {
            bail!(
                "the provider shows no progress provisioning pod {pod_id} for {} s; it stays deployed: follow it \
                 with `tpod status`",
                PROVISION_STALL.as_secs()
            );
        }
        if let Some(next) = next_status(publisher, provider, pod_id, &mut failures)
            .await
            .context("following the pod while the provider provisions it")?
        {
            status = next;
        }
    }
    if let Some((_, s)) = step {
        s.finish();
    }
    Ok(status)
}

/// Refuses what this version cannot deliver yet, before anything is uploaded or paid.
fn check_supported(manifest: &Manifest, path: &Path) -> anyhow::Result<()> {
    let no_port = manifest.containers.iter().all(|c| c.ports.is_empty());
    if manifest.replicas.min == 0 && no_port {
        bail!(
            "{}: replicas.min: 0 scales the pod to zero until a request wakes it, but it has no port",
            path.display()
        );
    }
    if manifest.replicas.max > 1 && no_port {
        bail!("{}: replicas.max: replicas share the pod's requests, but it has no port", path.display());
    }
    if manifest.replicas.max > 1 && manifest.restart_policy != tpod_manifest::RestartPolicy::Always {
        bail!(
            "{}: replicas.max: replicas serve requests; a job (restartPolicy OnFailure or Never) runs once, with max: 1",
            path.display()
        );
    }
    Ok(())
}

fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    let manifest = tpod_manifest::load(path).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    check_supported(&manifest, path)?;
    Ok(manifest)
}

/// The test hook that stops a deploy right after its channel is funded and recorded, as if the
/// provider had then refused the pod: lets tests reproduce a failed deploy deterministically.
const FAIL_AFTER_FUNDING: &str = "TPOD_TEST_FAIL_AFTER_FUNDING";

/// A channel from an earlier deploy of this name that the provider never took: funded, open, not
/// being unlocked and never claimed from, so the next deploy of the name can use it.
async fn unused_channel(
    publisher: &Publisher,
    records: &Deployments,
    name: &str,
) -> Option<(Deployment, tpod_chain::client::ChannelState)> {
    for old in records.named(name).into_iter().rev().filter(|d| d.is_unused()) {
        if old.publisher != publisher.key.address() {
            continue;
        }
        if let Ok(Some(channel)) = publisher.chain.channel(old.channel_id).await
            && !channel.closed
            && channel.unlock_at.is_none()
            && channel.claimed.is_zero()
        {
            return Some((old.clone(), channel));
        }
    }
    None
}

/// What a deploy asks a provider for: the reservation, the GPUs and the host names.
fn quote_request(manifest: &Manifest, reservation: &tpod_market::Reservation) -> pb::QuoteRequest {
    let mut resources = reservation.to_proto();
    resources.gpu = manifest.containers.iter().fold(0u32, |n, c| n.saturating_add(c.resources.gpu));
    let hostnames =
        manifest.containers.iter().flat_map(|c| c.ports.iter().filter_map(|p| p.hostname.clone())).collect();
    pb::QuoteRequest { version: tpod_wire::VERSION, resources: Some(resources), hostnames }
}

/// Asks the chosen provider whether it takes this very pod (capacity, GPUs, host names), so a
/// refusal comes before anything is paid.
async fn check_quote(
    publisher: &Publisher,
    provider: &ProviderTarget,
    request: &pb::QuoteRequest,
) -> anyhow::Result<()> {
    let quote = publisher
        .client
        .quote(provider.peer, provider.addr.clone(), request.clone())
        .await
        .with_context(|| format!("asking provider {} for a quote", provider.peer))?;
    if !quote.available {
        bail!("provider {} cannot take this pod: {}; nothing was paid", provider.peer, quote.reason);
    }
    if !quote.taken_hostnames.is_empty() {
        bail!(
            "provider {}: conflict: host name {} is held by another pod; nothing was paid",
            provider.peer,
            quote.taken_hostnames.join(", ")
        );
    }
    Ok(())
}

/// The most a channel can hold (the contract keeps amounts in 104 bits).
fn max_channel_amount() -> U256 {
    (U256::from(1u8) << 104) - U256::from(1u8)
}

/// Refuses a channel of `amount` the provider or the contract would refuse, and a payment of
/// `to_pay` the account cannot make.
async fn check_amount(
    publisher: &Publisher,
    terms: &crate::pick::Terms,
    amount: U256,
    to_pay: U256,
) -> anyhow::Result<()> {
    let token = &publisher.token;
    if amount < terms.min_funding {
        bail!(
            "the channel would hold {}, but the provider asks at least {} (its minimum funding); nothing was paid",
            token.format(amount),
            token.format(terms.min_funding)
        );
    }
    if amount > max_channel_amount() {
        bail!("a channel holds at most {}; nothing was paid", token.format(max_channel_amount()));
    }
    if to_pay.is_zero() {
        return Ok(());
    }
    let me = publisher.key.address();
    let balance = publisher
        .chain
        .token_balance(publisher.chain.contracts().token, me)
        .await
        .context("reading the publisher's token balance")?;
    if balance < to_pay {
        bail!("{me} holds {}, less than the {} to fund; nothing was paid", token.format(balance), token.format(to_pay));
    }
    if publisher.chain.native_balance(me).await.context("reading the publisher's gas balance")?.is_zero() {
        bail!("{me} has no gas money on chain {}; nothing was paid", publisher.chain.chain_id());
    }
    Ok(())
}

/// Refuses a provision request the provider's wire checks would refuse: the pod within
/// [`tpod_wire::limits`], the signed request within the protocol's frame.
fn check_wire(publisher: &Publisher, pod_id: B256, action: &pb::provision_request::Action) -> anyhow::Result<()> {
    use tpod_wire::Validate as _;
    let request = pb::ProvisionRequest {
        version: tpod_wire::VERSION,
        pod_id: pod_id.to_vec(),
        publisher: publisher.key.address().to_string(),
        nonce: u64::MAX,
        expiry_unix: u64::MAX,
        action: Some(action.clone()),
    };
    request.validate().map_err(|e| anyhow::anyhow!("the pod is too large for the provision protocol: {e}"))?;
    let signed = pb::SignedRequest {
        version: tpod_wire::VERSION,
        payload: request.encode_to_vec(),
        signature: vec![0; tpod_wire::limits::SIGNATURE_BYTES],
    };
    signed.validate().map_err(|e| anyhow::anyhow!("the provision request is malformed: {e}"))?;
    let size = signed.encoded_len();
    // A length-delimited frame: the message and its varint length.
    if size + 10 > tpod_wire::codec::PROVISION_MAX_BYTES {
        bail!(
            "the provision request takes {size} bytes; the protocol carries at most {} (env, args or secrets too large)",
            tpod_wire::codec::PROVISION_MAX_BYTES
        );
    }
    Ok(())
}

/// `tpod deploy`.
///
/// Everything that can be known before paying is checked before paying: the manifest, images
/// (with the provider's unpack rules), secrets, the provider's quote for this very pod (capacity,
/// GPUs, host names), its attestation, the amount against its minimum and the account's balance,
/// and the request against the wire limits. A channel funded by an earlier deploy of the same
/// name that the provider did not take is used again when its provider is chosen (it is
/// preferred when no `--provider` is named); otherwise it stays recorded for `tpod withdraw`.
pub async fn deploy(args: &DeployArgs, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let manifest = load_manifest(&args.manifest)?;
    let name = args.name.clone().unwrap_or_else(|| manifest.name.clone());
    let records_dir = target.records_dir(devnet_dir)?;
    let mut records = Deployments::load(&records_dir)?;
    if records.named(&name).iter().any(|d| d.deployed) {
        bail!("a deployment named {name:?} exists; use `tpod update` or deploy with --name");
    }
    let delivery = Delivery::prepare(&manifest, &args.manifest, &args.registry, json).await?;
    let publisher = Publisher::open(devnet_dir, target).await?;
    let reservation = tpod_market::Reservation::of_manifest(&manifest);
    let auto = target.provider.as_deref().is_none_or(|f| f == crate::pick::AUTO);
    let unused = unused_channel(&publisher, &records, &name).await;
    // An unused channel's provider is preferred: the funds are there already.
    let preferred = match (&unused, auto) {
        (Some((old, _)), true) => {
            let p = ProviderTarget::from_deployment(old, devnet_dir)?;
            Some(format!("{}@{}", p.peer, p.addr))
        }
        _ => None,
    };
    let picked = match &preferred {
        Some(flag) => {
            match crate::pick::choose(&publisher, &reservation, Some(flag), &target.attest, devnet_dir).await {
                Ok(picked) => Ok(picked),
                Err(e) => {
                    eprintln!(
                        "the provider of {name}'s unused channel is not available ({e:#}); picking another, and the \
                         channel stays recorded (`tpod list`)"
                    );
                    crate::pick::choose(
                        &publisher,
                        &reservation,
                        target.provider.as_deref(),
                        &target.attest,
                        devnet_dir,
                    )
                    .await
                }
            }
        }
        None => {
            crate::pick::choose(&publisher, &reservation, target.provider.as_deref(), &target.attest, devnet_dir).await
        }
    };
    let (chosen, skipped) = picked?;
    let crate::pick::Chosen { provider, terms, attested } = chosen;
    let enclave_signer = Address::from(attested.binding.enclave_signer);
    let enclave = enclave_key(&attested)?;

    // Checked before anything is sent: a cap that rounds to nothing per second is refused.
    let max_rate = match &args.max_rate {
        Some(rate) => publisher.token.per_second(publisher.token.amount(rate)?)?,
        None => 0,
    };
    let reuse = unused.filter(|(old, channel)| {
        old.provider_address == terms.provider_address
            && channel.enclave_signer == enclave_signer
            && channel.unlock_delay >= terms.min_unlock_delay_secs
            && channel.cap.map_or(0, |(rate, _)| rate) == max_rate
    });
    for old in records.named(&name).into_iter().filter(|d| d.is_unused()) {
        if reuse.as_ref().is_none_or(|(r, _)| r.channel_id != old.channel_id) {
            eprintln!(
                "channel {} of an earlier deploy of {name} is not used (another provider, enclave or spend cap, or \
                 not reusable on chain); it stays recorded: `tpod unlock {}` then `tpod withdraw {}` recovers it",
                old.channel_id, old.channel_id, old.channel_id
            );
        }
    }
    let amount = match &args.amount {
        Some(amount) => publisher.token.amount(amount)?,
        None => terms
            .prices
            .reservation_numerator_per_second(
                reservation.cpu_millis,
                reservation.memory_bytes,
                reservation.storage_bytes,
            )
            .context("the quoted prices overflow")?
            .div_ceil(tpod_billing::DENOMINATOR)
            .saturating_mul(U256::from(args.hours.saturating_mul(3600)))
            .max(terms.min_funding),
    };
    // What has to be paid now: all of it for a new channel, the difference for a reused one.
    let to_pay = match &reuse {
        Some((_, channel)) => amount.saturating_sub(channel.unclaimed()),
        None => amount,
    };
    let funded = reuse.as_ref().map_or(amount, |(_, channel)| channel.unclaimed().max(amount));
    check_amount(&publisher, &terms, funded, to_pay).await?;
    let request = quote_request(&manifest, &reservation);
    check_quote(&publisher, &provider, &request).await?;

    let uploaded = upload(&publisher, &provider, &delivery.encrypted, &delivery.images, json).await?;
    let pod_id = reuse.as_ref().map_or_else(B256::random, |(old, _)| old.pod_id);
    // Sealed before anything is paid: a failure here leaves nothing behind.
    let sealing = sealing_key(&publisher.key);
    let pod = to_proto(&manifest, &delivery, &Sealer { sender: &sealing, enclave, pod_id })?;
    let action =
        pb::provision_request::Action::Provision(pb::Provision { pod: Some(pod), pricing: Some(terms.quoted) });
    check_wire(&publisher, pod_id, &action)?;
    // Again right before paying: capacity or a host name may have gone during the upload.
    check_quote(&publisher, &provider, &request).await?;

    let token_address = publisher.chain.contracts().token;
    let mut record = match reuse {
        Some((old, _)) => {
            if !to_pay.is_zero() {
                publisher.chain.approve_payment(token_address, to_pay).await.context("approving the payment")?;
                publisher
                    .chain
                    .deposit(old.provider_address, old.pod_id, to_pay)
                    .await
                    .context("topping up the unused channel")?;
            }
            if !json {
                say!("using channel {} funded by an earlier deploy of {name}", old.channel_id);
            }
            Deployment { manifest: args.manifest.clone(), ..old }
        }
        None => {
            publisher.chain.approve_payment(token_address, amount).await.context("approving the payment")?;
            let channel_id = publisher
                .chain
                .create_channel(&NewChannel {
                    provider: terms.provider_address,
                    pod_id,
                    enclave_signer,
                    amount,
                    unlock_delay: terms.min_unlock_delay_secs,
                    max_rate,
                })
                .await
                .context("creating the payment channel")?;
            let record = Deployment {
                name: name.clone(),
                pod_id,
                publisher: publisher.key.address(),
                provider_peer: provider.peer.to_string(),
                provider_addr: provider.addr.to_string(),
                provider_address: terms.provider_address,
                channel_id,
                url: String::new(),
                manifest: args.manifest.clone(),
                deployed: false,
                deleted: false,
                created_at: crate::billing::chain_now(&publisher.chain).await.unwrap_or_default(),
            };
            // Recorded before the pod is sent, so the funded channel is never forgotten.
            records.upsert(record.clone());
            records.save(&records_dir)?;
            record
        }
    };
    let channel_id = record.channel_id;
    let failed = |e: anyhow::Error| {
        e.context(format!(
            "deploying {name}: channel {channel_id} stays funded and recorded; `tpod deploy` of {name} again uses it, \
             or `tpod unlock {channel_id}` then `tpod withdraw {channel_id}` recovers it"
        ))
    };
    if std::env::var_os(FAIL_AFTER_FUNDING).is_some() {
        return Err(failed(anyhow::anyhow!("stopped after funding ({FAIL_AFTER_FUNDING} is set)")));
    }
    let status = publisher.provision(&provider, pod_id, action).await.map_err(failed)?;
    // A big image unpacks on the provider after it accepted the pod.
    let status = follow_provisioning(&publisher, &provider, pod_id, status, json).await.map_err(failed)?;
    // A job may have finished (and failed) already: that is no failed deploy.
    if let Some(reason) = status.state.strip_prefix("failed: ")
        && !finished(&status)
    {
        // Nothing was metered: the channel stays unused, for a later deploy of this name.
        return Err(failed(anyhow::anyhow!("the provider could not start the pod: {reason}")));
    }
    record.url = status.url.clone();
    record.deployed = true;
    records.upsert(record.clone());
    records.save(&records_dir)?;

    if !json {
        say!("deployed {name} (pod {pod_id})");
        say!("  provider {} ({})", provider.peer, terms.provider_address);
        say!("  images  sealed to the provider's enclave; {uploaded} encrypted bytes uploaded");
        say!("  channel {channel_id} funded with {}", publisher.token.format(funded));
        say!("  state   {}", status.state);
        if !status.url.is_empty() {
            say!("  url     {}", status.url);
        }
    }
    // A job is followed until it finishes; any pod is watched a few seconds for a crash loop.
    let watched = watch(&publisher, &provider, pod_id, status, manifest.restart_policy, &name, json).await?;
    let status = watched.status();
    if json {
        say!(
            "{}",
            json!({
                "name": name, "url": status.url, "pod_id": pod_id, "channel_id": channel_id,
                "amount": funded.to_string(), "paid": to_pay.to_string(), "provider": provider.peer.to_string(),
                "provider_address": terms.provider_address, "skipped": skipped, "state": status.state,
                "uploaded_bytes": uploaded, "restart_policy": manifest.restart_policy.as_str(),
                "finished": matches!(watched, Watched::Finished(_)),
                "crash_looping": matches!(watched, Watched::CrashLooping(_)),
                "exit_codes": status.containers.iter()
                    .map(|c| (c.name.clone(), json!(c.has_exit_code.then_some(c.exit_code))))
                    .collect::<serde_json::Map<_, _>>(),
            })
        );
    } else {
        report_watched(&watched, &name);
    }
    // On stderr, so said with --json too.
    if json && matches!(watched, Watched::CrashLooping(_)) {
        report_watched(&watched, &name);
    }
    Ok(if watched.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What `deploy` saw of a pod once it was started.
enum Watched {
    /// Running as it should, as far as the watch saw.
    Running(pb::PodStatus),
    /// Every container ended for good under its restart policy: a job that finished.
    Finished(pb::PodStatus),
    /// A container keeps failing and is restarted.
    CrashLooping(pb::PodStatus),
}

impl Watched {
    fn status(&self) -> &pb::PodStatus {
        match self {
            Watched::Running(s) | Watched::Finished(s) | Watched::CrashLooping(s) => s,
        }
    }

    /// Whether `deploy` succeeds: the pod runs, or its job succeeded.
    fn ok(&self) -> bool {
        match self {
            Watched::Running(_) => true,
            Watched::Finished(s) => s.state == "succeeded",
            Watched::CrashLooping(_) => false,
        }
    }
}

/// Whether every container of the pod has ended for good (a finished job). A pod that failed
/// to deploy has no containers.
fn finished(status: &pb::PodStatus) -> bool {
    !status.containers.is_empty()
        && status.containers.iter().all(|c| matches!(c.state.as_str(), "succeeded" | "failed"))
}

/// The first container that failed and was restarted at least `restarts` times, if any.
fn crash_looping(status: &pb::PodStatus, restarts: u32) -> Option<&pb::ContainerStatus> {
    status
        .containers
        .iter()
        .find(|c| c.restarts >= restarts.max(1) && (c.state == "restarting" || (c.has_exit_code && c.exit_code != 0)))
}

/// How long `deploy` watches a service (`restartPolicy: Always`) after it started: a container
/// that exits at once has been restarted, or waits out its first backoff (1 s), by then.
const WATCH_SERVICE: Duration = Duration::from_secs(3);

/// Restarts after which a job (`restartPolicy: OnFailure`) that keeps failing is reported as
/// crash-looping instead of followed on (it may still succeed: the provider keeps retrying).
const JOB_RESTARTS: u32 = 3;

/// After the deploy: follows a job (`OnFailure`, `Never`) until it finishes or crash-loops, or
/// watches a service for [`WATCH_SERVICE`] for a crash loop.
async fn watch(
    publisher: &Publisher,
    provider: &ProviderTarget,
    pod_id: B256,
    mut status: pb::PodStatus,
    policy: RestartPolicy,
    name: &str,
    quiet: bool,
) -> anyhow::Result<Watched> {
    let job = policy != RestartPolicy::Always;
    let restarts = if job { JOB_RESTARTS } else { 1 };
    if job && !quiet && !finished(&status) {
        say!("following {name} until it finishes (Ctrl-C stops following; the pod keeps running)");
    }
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        if finished(&status) {
            return Ok(Watched::Finished(status));
        }
        if crash_looping(&status, restarts).is_some() {
            return Ok(Watched::CrashLooping(status));
        }
        if !job && started.elapsed() >= WATCH_SERVICE {
            return Ok(Watched::Running(status));
        }
        let next = next_status(publisher, provider, pod_id, &mut failures).await.with_context(|| {
            format!("following {name} after its deploy; it stays deployed: follow it with `tpod status {name}`")
        })?;
        if let Some(next) = next {
            status = next;
        }
    }
}

/// Asks for the pod's status again after half a second, for a command that follows it. A
/// request lost on the way is asked again, a few times: `None` until then (`failures` counts
/// them), the error after.
async fn next_status(
    publisher: &Publisher,
    provider: &ProviderTarget,
    pod_id: B256,
    failures: &mut u32,
) -> anyhow::Result<Option<pb::PodStatus>> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    match publisher.provision(provider, pod_id, pb::provision_request::Action::Status(pb::Status {})).await {
        Ok(next) => {
            *failures = 0;
            Ok(Some(next))
        }
        Err(e) if *failures < 5 => {
            *failures += 1;
            tracing::warn!(error = %format!("{e:#}"), "status of the pod");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Tells the user how the watch after a deploy ended.
fn report_watched(watched: &Watched, name: &str) {
    match watched {
        Watched::Running(_) => {}
        Watched::Finished(status) => {
            let outcome = if status.state == "succeeded" { "succeeded" } else { "failed" };
            say!("finished: {outcome}");
            for c in &status.containers {
                let code = if c.has_exit_code { c.exit_code.to_string() } else { "unknown".to_owned() };
                say!("  container {}: {} (exit code {code}, {} restarts)", c.name, c.state, c.restarts);
            }
            say!(
                "  billing stopped and the provider released the channel; `tpod logs {name}` shows the output, \
                 `tpod delete {name}` returns the rest of the deposit"
            );
        }
        Watched::CrashLooping(status) => {
            if let Some(c) = crash_looping(status, 1) {
                let code = if c.has_exit_code { c.exit_code.to_string() } else { "unknown".to_owned() };
                eprintln!(
                    "{name} is crash-looping: container {} exited with code {code} ({} restarts so far); see \
                     `tpod logs {name} --container {}`",
                    c.name, c.restarts, c.name
                );
            } else {
                eprintln!("{name} is crash-looping; see `tpod status {name}` and `tpod logs {name}`");
            }
            eprintln!(
                "  the pod stays deployed and billed while the provider keeps restarting it: fix it and `tpod \
                 update`, or `tpod delete {name}`"
            );
        }
    }
}

/// `tpod update`.
pub async fn update(args: &DeployArgs, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let manifest = load_manifest(&args.manifest)?;
    let mut records = Deployments::load(&target.records_dir(devnet_dir)?)?;
    let mut record = records.find(args.name.as_deref().or(Some(&manifest.name)))?.clone();
    let delivery = Delivery::prepare(&manifest, &args.manifest, &args.registry, json).await?;
    let publisher = Publisher::open(devnet_dir, target).await?;
    let provider = ProviderTarget::from_deployment(&record, devnet_dir)?;
    let attested = crate::attest::attested(&publisher.client, &provider, &target.attest, devnet_dir).await?;
    // The channel pays only usage reports signed by the enclave it names: a provider whose
    // attested enclave changed could not be paid for this pod.
    let channel = publisher.chain.channel(record.channel_id).await?.context("the deployment's channel is gone")?;
    if Address::from(attested.binding.enclave_signer) != channel.enclave_signer {
        bail!(
            "provider {} now attests enclave signer 0x{}, not the channel's {}; deploy anew",
            provider.peer,
            alloy::hex::encode(attested.binding.enclave_signer),
            channel.enclave_signer
        );
    }
    let enclave = enclave_key(&attested)?;
    upload(&publisher, &provider, &delivery.encrypted, &delivery.images, json).await?;
    let sealing = sealing_key(&publisher.key);
    let pod = to_proto(&manifest, &delivery, &Sealer { sender: &sealing, enclave, pod_id: record.pod_id })?;
    let action = pb::provision_request::Action::Update(pb::Update { pod: Some(pod) });
    check_wire(&publisher, record.pod_id, &action)?;
    let status = publisher.provision(&provider, record.pod_id, action).await?;
    record.url = status.url.clone();
    record.manifest = args.manifest.clone();
    records.upsert(record.clone());
    records.save(&target.records_dir(devnet_dir)?)?;
    print_status(&record, &status, &publisher.token, json);
    Ok(ExitCode::SUCCESS)
}

/// `tpod status`.
pub async fn status(name: Option<&str>, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let records = Deployments::load(&target.records_dir(devnet_dir)?)?;
    let record = records.find(name)?;
    let publisher = Publisher::open(devnet_dir, target).await?;
    let provider = ProviderTarget::from_deployment(record, devnet_dir)?;
    let status =
        publisher.provision(&provider, record.pod_id, pb::provision_request::Action::Status(pb::Status {})).await?;
    print_status(record, &status, &publisher.token, json);
    Ok(ExitCode::SUCCESS)
}

fn print_status(record: &Deployment, status: &pb::PodStatus, token: &crate::units::Token, json: bool) {
    let mut tcp: Vec<(u32, u32)> = status.tcp_ports.iter().map(|(c, h)| (*c, *h)).collect();
    tcp.sort_unstable();
    if json {
        say!(
            "{}",
            json!({
                "name": record.name, "pod_id": record.pod_id, "state": status.state, "url": status.url,
                "replicas": status.replicas,
                "tcp_ports": tcp.iter().map(|(c, h)| json!({"container_port": c, "host_port": h})).collect::<Vec<_>>(),
                "containers": status.containers.iter().map(|c| json!({
                    "name": c.name, "replica": c.replica, "state": c.state, "restarts": c.restarts,
                    "exit_code": c.has_exit_code.then_some(c.exit_code),
                })).collect::<Vec<_>>(),
                "billing": status.billing.as_ref().map(|b| json!({
                    "metered": b.amount, "claimed": b.claimed, "rate_per_second": b.rate_per_second,
                    "top_up": (!b.top_up.is_empty()).then_some(&b.top_up),
                })),
                "last_wake": status.last_wake.as_ref().map(|w| json!({
                    "at": w.at_unix, "millis": w.millis, "error": (!w.error.is_empty()).then_some(&w.error),
                })),
                "progress": status.progress.as_ref().map(|p| json!({
                    "phase": p.phase, "container": (!p.container.is_empty()).then_some(&p.container),
                    "done_bytes": p.done_bytes, "total_bytes": p.total_bytes,
                })),
            })
        );
        return;
    }
    say!("{}: {}", record.name, status.state);
    if let Some(w) = &status.last_wake {
        let at = crate::units::format_time(w.at_unix);
        match w.error.as_str() {
            "" => say!("  last wake {at}, in {} ms", w.millis),
            error => say!("  last wake {at} FAILED after {} ms: {error}", w.millis),
        }
    }
    if let Some(p) = &status.progress {
        match p.phase.as_str() {
            "unpacking" => say!(
                "  unpacking {}: {} of {}",
                p.container,
                crate::progress::mib(p.done_bytes),
                crate::progress::mib(p.total_bytes)
            ),
            phase => say!("  {phase}"),
        }
    }
    if !status.url.is_empty() {
        say!("  url {}", status.url);
    }
    for (c, h) in tcp {
        say!("  tcp {c} -> host port {h}");
    }
    if status.replicas > 1 {
        say!("  {} replicas", status.replicas);
    }
    for c in &status.containers {
        let exit = if c.has_exit_code { format!(", last exit code {}", c.exit_code) } else { String::new() };
        let replica = if status.replicas > 1 { format!(" (replica {})", c.replica) } else { String::new() };
        say!("  container {}{replica}: {} ({} restarts{exit})", c.name, c.state, c.restarts);
    }
    if let Some(b) = &status.billing {
        // The provider sends decimal strings; one that does not parse is shown as sent.
        let amount = |text: &str| text.parse().map_or_else(|_| format!("{text} base"), |v| token.format(v));
        let amount_per_hour = |text: &str| {
            text.parse::<U256>()
                .map_or_else(|_| format!("{text} base/s"), |v| token.format(v.saturating_mul(U256::from(3600u64))))
        };
        say!(
            "  billed {} so far, {} claimed, {}/h now (`tpod bill` for details)",
            amount(&b.amount),
            amount(&b.claimed),
            amount_per_hour(&b.rate_per_second)
        );
    }
}

/// `tpod delete`: the provider stops the pod, makes its final claim and releases the channel;
/// then the channel is closed and what is left comes back to the publisher.
pub async fn delete(name: Option<&str>, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut records = Deployments::load(&target.records_dir(devnet_dir)?)?;
    let mut record = records.find(name)?.clone();
    let publisher = Publisher::open(devnet_dir, target).await?;
    let provider = ProviderTarget::from_deployment(&record, devnet_dir)?;
    let status =
        publisher.provision(&provider, record.pod_id, pb::provision_request::Action::Delete(pb::Delete {})).await?;
    let claimed = status.billing.as_ref().map(|b| b.claimed.clone()).unwrap_or_default();
    let metered = status.billing.as_ref().map(|b| b.amount.clone()).unwrap_or_default();
    let usage = status
        .billing
        .as_ref()
        .and_then(|b| b.usage.as_ref())
        .map(tpod_billing::Usage::from_proto)
        .transpose()
        .map_err(|e| anyhow::anyhow!("the provider sent malformed usage: {e}"))?;
    let channel = publisher.chain.channel(record.channel_id).await.context("reading the payment channel")?;
    // Released means unlocked by the chain's clock, which is what `close` is checked against.
    let now = crate::billing::chain_now(&publisher.chain).await?;
    let released = channel.as_ref().is_some_and(|c| !c.closed && c.unlock_at.is_some_and(|t| t <= now));
    let refunded = if released {
        let refunded = publisher
            .chain
            .close_channel(record.provider_address, record.pod_id)
            .await
            .context("closing the payment channel")?;
        records.remove_channel(record.channel_id);
        Some(refunded)
    } else {
        // The provider has not released the channel yet (its final claim is pending): keep the
        // record so `tpod unlock` and `tpod withdraw` can still recover the funds; it is never
        // used for another deploy.
        record.deployed = false;
        record.deleted = true;
        records.upsert(record.clone());
        None
    };
    records.save(&target.records_dir(devnet_dir)?)?;
    if json {
        say!(
            "{}",
            json!({
                "name": record.name, "deleted": true, "state": status.state, "channel_id": record.channel_id,
                "claimed": claimed, "metered": metered, "usage": usage,
                "refunded": refunded.map(|r| r.to_string()),
            })
        );
    } else {
        say!("deleted {} (pod {}): {}", record.name, record.pod_id, status.state);
        match refunded {
            Some(r) => say!(
                "  the provider claimed {} in total; channel closed, {} returned to you",
                claimed.parse().map_or_else(|_| format!("{claimed} base"), |c| publisher.token.format(c)),
                publisher.token.format(r)
            ),
            None => say!(
                "  the provider has not released channel {} yet; run `tpod unlock {}` and, after the delay, `tpod withdraw {}`",
                record.channel_id,
                record.channel_id,
                record.channel_id
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Options of `tpod logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The deployment (default: the only one).
    pub name: Option<String>,
    /// Keep streaming new output.
    #[arg(long, short)]
    pub follow: bool,
    /// The container (default: the pod's first).
    #[arg(long, short)]
    pub container: Option<String>,
    /// Lines of history to show first (0: all that is kept).
    #[arg(long, default_value_t = 0)]
    pub tail: u64,
    /// Which replica, for a pod that runs several (`tpod status` lists them); the first by
    /// default.
    #[arg(long, default_value_t = 0)]
    pub replica: u32,
}

/// `tpod logs`.
pub async fn logs(args: &LogsArgs, target: &Target, devnet_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let records = Deployments::load(&target.records_dir(devnet_dir)?)?;
    let record = records.find(args.name.as_deref())?;
    let publisher = Publisher::open(devnet_dir, target).await?;
    let provider = ProviderTarget::from_deployment(record, devnet_dir)?;
    let pod_id = record.pod_id;
    let who = publisher.key.address().to_string();
    let signed = publisher.sign(pod_id, "logs", |nonce, expiry_unix| {
        pb::LogsRequest {
            version: tpod_wire::VERSION,
            pod_id: pod_id.to_vec(),
            publisher: who,
            nonce,
            expiry_unix,
            container: args.container.clone().unwrap_or_default(),
            follow: args.follow,
            tail_lines: args.tail,
            replica: args.replica,
        }
        .encode_to_vec()
    });
    let mut stream = publisher
        .client
        .logs(provider.peer, provider.addr.clone(), signed)
        .await
        .with_context(|| format!("opening the logs of {}", record.name))?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.with_context(|| format!("reading the logs of {}", record.name))?;
        if let Some(e) = &chunk.error {
            bail!("the provider ended the logs: {}", e.message);
        }
        let written = if json {
            let line = json!({
                "container": chunk.container,
                "timestamp_unix_nanos": chunk.timestamp_unix_nanos,
                "data": String::from_utf8_lossy(&chunk.data),
            });
            if chunk.data.is_empty() { Ok(()) } else { writeln!(out, "{line}") }
        } else {
            out.write_all(&chunk.data).and_then(|()| out.flush())
        };
        if written.is_err() || chunk.end {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
