//! Confidential delivery, the publisher's side: nothing of a pod's images or secrets leaves this
//! machine in clear.
//!
//! 1. [`read_images`]: each container's image, from an OCI layout directory, a docker-archive
//!    tarball, or a registry (private ones with credentials from a file or stdin, else from
//!    docker's `config.json` in `$DOCKER_CONFIG` or `~/.docker`; never from the command line).
//! 2. [`encrypt_images`]: every blob is encrypted with a key of its own into the local cache,
//!    once; a later deploy of the same image, to any provider, re-uses the ciphertext.
//! 3. [`upload`]: the ciphertexts the provider lacks go over `/tpod/blob/1`, resumably, with a
//!    progress bar.
//! 4. [`Sealer`]: the blob keys, the secret files and each container's command, args and env are
//!    sealed (HPKE auth mode) to the provider's enclave key from the verified attestation, by the
//!    publisher's sealing key (derived from its account key), for this pod and this container or
//!    volume only.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use clap::Args;
use prost::Message;
use tpod_crypto::{Purpose, SecretKey};
use tpod_image::{EncryptedImage, RegistryAuth};
use tpod_manifest::{ImageKind, Manifest, VolumeSource};
use tpod_wire::limits::{MAX_FILE_NAME_BYTES, MAX_SECRET_BYTES};
use tpod_wire::pb;

use crate::pods::{ProviderTarget, Publisher};
use crate::progress::Step;

/// How `deploy` and `update` log in to registries.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// A file holding `username:password` for the registries of the manifest's images (instead of
    /// docker's config.json).
    #[arg(long, value_name = "FILE", env = "TPOD_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// Read `username:password` for the registries from standard input.
    #[arg(long, conflicts_with = "registry_auth_file")]
    pub registry_auth_stdin: bool,
}

impl RegistryArgs {
    /// The credentials given explicitly, if any.
    fn explicit(&self) -> anyhow::Result<Option<RegistryAuth>> {
        let text = if let Some(path) = &self.registry_auth_file {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        } else if self.registry_auth_stdin {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("cannot read registry credentials from stdin")?;
            text
        } else {
            return Ok(None);
        };
        let line = text.lines().next().unwrap_or_default().trim();
        let (username, password) =
            line.split_once(':').context("registry credentials must be `username:password` on one line")?;
        Ok(Some(RegistryAuth { username: username.to_owned(), password: password.to_owned() }))
    }
}

/// Options of `tpod upload`.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// The pod manifest whose images to upload.
    pub manifest: PathBuf,
    /// Registry credentials.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `tpod upload`: reads, encrypts and uploads a manifest's images, and says how long each step took.
pub async fn upload_command(
    args: &UploadArgs,
    target: &crate::pods::Target,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    let manifest = tpod_manifest::load(&args.manifest).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let images = read_images(&manifest, &args.manifest, &args.registry).await?;
    let started = Instant::now();
    let encrypted = encrypt_images(&images, json)?;
    let encrypt_seconds = started.elapsed().as_secs_f64();
    let publisher = Publisher::open(devnet_dir, target).await?;
    // The provider a deploy of this manifest would pick, so the deploy after finds its blobs.
    let reservation = tpod_market::Reservation::of_manifest(&manifest);
    let (chosen, _) =
        crate::pick::choose(&publisher, &reservation, target.provider.as_deref(), &target.attest, devnet_dir).await?;
    let provider = chosen.provider;
    let started = Instant::now();
    let uploaded = upload(&publisher, &provider, &encrypted, &images, json).await?;
    let upload_seconds = started.elapsed().as_secs_f64();
    let total: u64 = encrypted.iter().flat_map(|i| i.blobs()).map(|b| b.ciphertext_size).sum();
    if json {
        say!(
            "{}",
            serde_json::json!({
                "encrypted_bytes": total, "uploaded_bytes": uploaded,
                "encrypt_seconds": encrypt_seconds, "upload_seconds": upload_seconds,
            })
        );
    } else {
        say!("{total} encrypted bytes ({encrypt_seconds:.1} s to encrypt or find in the cache)");
        say!("{uploaded} bytes uploaded to {} in {upload_seconds:.1} s", provider.peer());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// A container's image, read and verified.
pub(crate) struct LocalImage {
    pub(crate) container: String,
    pub(crate) image: tpod_image::Image,
}

/// Reads every container's image; errors name the manifest field and the image.
pub(crate) async fn read_images(
    manifest: &Manifest,
    manifest_path: &Path,
    registry: &RegistryArgs,
) -> anyhow::Result<Vec<LocalImage>> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let explicit = registry.explicit()?;
    let mut images = Vec::with_capacity(manifest.containers.len());
    for (i, c) in manifest.containers.iter().enumerate() {
        let field = format!("{}: containers[{i}].image", manifest_path.display());
        let image = match c.image.kind {
            ImageKind::Registry => {
                // Without explicit credentials, docker's config.json is looked up for the registry.
                let reference = &c.image.reference;
                tpod_image::pull_image(reference, explicit.as_ref(), &crate::image_cache_dir().join("registry"))
                    .await
                    .with_context(|| format!("{field}: pulling {reference}"))?
            }
            ImageKind::LocalPath => {
                let path = c.image.local_path(base).with_context(|| format!("{field}: no local path"))?;
                if !path.exists() {
                    bail!("{field}: image {} does not exist", path.display());
                }
                if path.is_dir() {
                    tpod_image::read_layout(&path)
                        .with_context(|| format!("{field}: {} is not a valid OCI image layout", path.display()))?
                } else {
                    tpod_image::import_docker_archive(&path, &crate::image_cache_dir())
                        .with_context(|| format!("{field}: {} is not a valid docker-archive tarball", path.display()))?
                }
            }
        };
        images.push(LocalImage { container: c.name.clone(), image });
    }
    Ok(images)
}

/// Encrypts every image's blobs into the cache (or finds them there).
pub(crate) fn encrypt_images(images: &[LocalImage], quiet: bool) -> anyhow::Result<Vec<EncryptedImage>> {
    let cache = crate::image_cache_dir().join("encrypted");
    images
        .iter()
        .map(|local| {
            let image = &local.image;
            let total = image.layers.iter().map(|l| l.blob.size).sum::<u64>() + image.config_blob.size;
            let mut step = Step::new(format!("encrypting {}", local.container), total, quiet);
            let encrypted = tpod_image::encrypt_image_with(image, &cache, &mut |bytes| step.add(bytes))
                .with_context(|| format!("encrypting the image of container {:?}", local.container))?;
            step.finish();
            Ok(encrypted)
        })
        .collect()
}

/// Uploads the encrypted blobs the provider lacks, showing progress unless `quiet`; returns the
/// bytes sent.
pub(crate) async fn upload(
    publisher: &Publisher,
    provider: &ProviderTarget,
    images: &[EncryptedImage],
    containers: &[LocalImage],
    quiet: bool,
) -> anyhow::Result<u64> {
    let mut sent = 0u64;
    for (image, local) in images.iter().zip(containers) {
        for blob in image.blobs() {
            let started = Instant::now();
            let cid = blob.cid.to_string();
            let name = format!("uploading {} {}", local.container, &cid[cid.len().saturating_sub(8)..]);
            let mut step = Step::new(name, blob.ciphertext_size, quiet);
            let report = publisher
                .client()
                .push_blob(provider.peer(), provider.addr(), &blob.cid, &blob.path, |progress| step.set(progress.held))
                .await
                .with_context(|| format!("uploading blob {} of container {:?}", blob.cid, local.container))?;
            step.finish();
            sent += report.sent;
            tracing::info!(
                cid = %blob.cid,
                bytes = report.sent,
                resumed_from = report.resumed_from,
                already_there = report.already_complete,
                seconds = started.elapsed().as_secs_f64(),
                "blob uploaded"
            );
        }
    }
    Ok(sent)
}

/// The publisher's sealing key: derived from its account key, so it needs no file of its own
/// and the same account always seals with the same key.
pub(crate) fn sealing_key(account: &PrivateKeySigner) -> SecretKey {
    let mut ikm = b"tpod publisher sealing key v1".to_vec();
    ikm.extend_from_slice(account.to_bytes().as_slice());
    let key = SecretKey::derive(&ikm);
    zeroize::Zeroize::zeroize(&mut ikm);
    key
}

/// Seals a pod's image keys, secrets and processes to one provider's enclave.
pub(crate) struct Sealer<'a> {
    pub(crate) sender: &'a SecretKey,
    pub(crate) enclave: tpod_crypto::PublicKey,
    pub(crate) pod_id: B256,
}

impl Sealer<'_> {
    fn seal(&self, purpose: Purpose, name: &str, plaintext: &[u8]) -> anyhow::Result<pb::Sealed> {
        let aad = tpod_crypto::sealing_aad(&self.pod_id.0, name);
        let sealed = tpod_crypto::seal(self.sender, &self.enclave, purpose, &aad, plaintext)
            .with_context(|| format!("sealing {name:?} to the provider's enclave"))?;
        Ok(pb::Sealed { enc: sealed.enc, ciphertext: sealed.ciphertext })
    }

    /// Seals the keys of `image` for container `container`.
    pub(crate) fn image(&self, container: &str, image: &EncryptedImage) -> anyhow::Result<pb::Sealed> {
        let keys = image.keys();
        let plaintext = zeroize::Zeroizing::new(keys.encode_to_vec());
        self.seal(Purpose::Image, container, &plaintext)
    }

    /// Seals the files of secret volume `volume`.
    pub(crate) fn secret(&self, volume: &str, files: &pb::SecretFiles) -> anyhow::Result<pb::Sealed> {
        let plaintext = zeroize::Zeroizing::new(files.encode_to_vec());
        self.seal(Purpose::Secret, volume, &plaintext)
    }

    /// Seals how container `container` starts (command, args, env). It is checked against the
    /// wire limits first: the provider sees only the ciphertext's size before it opens it, and
    /// would refuse an oversized process only after the pod is paid for.
    pub(crate) fn process(&self, container: &str, process: &pb::ProcessSpec) -> anyhow::Result<pb::Sealed> {
        use tpod_wire::Validate as _;
        process.validate().map_err(|e| {
            anyhow::anyhow!("container {container:?}: its command, args and env are too large to send: {e}")
        })?;
        let plaintext = zeroize::Zeroizing::new(process.encode_to_vec());
        self.seal(Purpose::Process, container, &plaintext)
    }
}

/// How a manifest container's process starts, as it is sealed: present but empty `command` or
/// `args` stay present (see `pb::ProcessSpec`).
pub(crate) fn process_spec(c: &tpod_manifest::Container) -> pb::ProcessSpec {
    pb::ProcessSpec {
        command: c.command.clone().unwrap_or_default(),
        has_command: c.command.is_some(),
        args: c.args.clone().unwrap_or_default(),
        has_args: c.args.is_some(),
        env: c.env.clone(),
    }
}

/// Reads the secret files of the manifest's secret volumes, by volume name. Each volume holds one
/// file, named like the local file, of at most 1 MiB.
pub(crate) fn read_secrets(
    manifest: &Manifest,
    manifest_path: &Path,
) -> anyhow::Result<Vec<(String, pb::SecretFiles)>> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let mut secrets = Vec::new();
    for (i, v) in manifest.volumes.iter().enumerate() {
        let VolumeSource::Secret { file } = &v.source else { continue };
        let field = format!("{}: volumes[{i}].secret.file", manifest_path.display());
        let path = base.join(file);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.len() <= MAX_FILE_NAME_BYTES)
            .with_context(|| format!("{field}: {} has no usable file name", path.display()))?
            .to_owned();
        let meta = std::fs::metadata(&path).with_context(|| format!("{field}: cannot read {}", path.display()))?;
        // The sealed message adds a few bytes of framing to the file.
        if !meta.is_file() || meta.len() > (MAX_SECRET_BYTES - 1024) as u64 {
            bail!("{field}: {} must be a file of at most 1023 KiB", path.display());
        }
        let data = std::fs::read(&path).with_context(|| format!("{field}: cannot read {}", path.display()))?;
        secrets.push((v.name.clone(), pb::SecretFiles { files: vec![pb::SecretFile { name, data }] }));
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;

    const MANIFEST: &str = r#"
name: app
containers:
  - name: web
    image: ./image
    command: ["/bin/sh", "-c"]
    args: ["exec app --token $TOKEN"]
    env:
      TOKEN: env-marker-31f5
    resources: { cpu: 100m, memory: 64Mi }
  - name: plain
    image: ./image
    resources: { cpu: 100m, memory: 64Mi }
  - name: no-cmd
    image: ./image
    args: []
    resources: { cpu: 100m, memory: 64Mi }
"#;

    fn manifest() -> Manifest {
        tpod_manifest::parse(MANIFEST, Path::new("tpod.yaml")).unwrap()
    }

    #[test]
    fn process_specs_keep_presence_apart_from_emptiness() {
        let m = manifest();
        let web = process_spec(&m.containers[0]);
        assert_eq!((web.has_command, web.has_args), (true, true));
        assert_eq!(web.command, ["/bin/sh", "-c"]);
        assert_eq!(web.env.get("TOKEN").map(String::as_str), Some("env-marker-31f5"));
        let plain = process_spec(&m.containers[1]);
        assert_eq!(plain, pb::ProcessSpec::default());
        // `args: []` drops the image's Cmd: present, though empty.
        let no_cmd = process_spec(&m.containers[2]);
        assert_eq!((no_cmd.has_command, no_cmd.has_args, no_cmd.args.len()), (false, true, 0));
    }

    #[test]
    fn a_sealed_process_opens_only_in_the_enclave_for_its_container() {
        let publisher = SecretKey::generate();
        let enclave = SecretKey::generate();
        let pod_id = B256::repeat_byte(7);
        let sealer = Sealer { sender: &publisher, enclave: enclave.public(), pod_id };
        let process = process_spec(&manifest().containers[0]);
        let sealed = sealer.process("web", &process).unwrap();
        let sealed = tpod_crypto::Sealed { enc: sealed.enc, ciphertext: sealed.ciphertext };
        assert!(!sealed.ciphertext.windows(15).any(|w| w == b"env-marker-31f5"), "the env is in clear");
        let open = |purpose, name| {
            let aad = tpod_crypto::sealing_aad(&pod_id.0, name);
            tpod_crypto::open(&enclave, &publisher.public(), purpose, &aad, &sealed)
        };
        let plain = open(Purpose::Process, "web").unwrap();
        assert_eq!(pb::ProcessSpec::decode(plain.as_slice()).unwrap(), process);
        assert!(open(Purpose::Process, "plain").is_err());
        assert!(open(Purpose::Secret, "web").is_err());
    }

    #[test]
    fn a_process_over_the_wire_limits_is_refused_before_sealing() {
        let publisher = SecretKey::generate();
        let sealer = Sealer { sender: &publisher, enclave: SecretKey::generate().public(), pod_id: B256::ZERO };
        let mut process = process_spec(&manifest().containers[0]);
        process.env = (0..64).map(|i| (format!("K{i}"), "v".repeat(16 * 1024))).collect();
        let err = sealer.process("web", &process).unwrap_err().to_string();
        assert!(err.contains("container \"web\"") && err.contains("too large"), "{err}");
        assert!(!err.contains("vvvv"), "{err}");
    }
}
