//! Opening what a publisher sealed to this provider's enclave: a container's image keys and
//! process (command, args, env) and a pod's secret volumes. All are HPKE ciphertexts in auth mode
//! (`tpod_crypto::seal`), so one opens only with the enclave's key, only if the publisher's key
//! (`Pod.sealed_by`, bound to the publisher by the request's signature) sealed it, and only for
//! the purpose, the pod and the container or volume it was sealed for. What opens stays in
//! memory: image keys go to the runtime, which decrypts layers while unpacking into memory;
//! secret files go to an in-memory volume; the process goes into the container's runtime spec,
//! which the runtime writes only into the container's tmpfs.

use tpod_crypto::{ContentId, PublicKey, Purpose, SecretKey};
use tpod_image::{Blob, Digest, Image, Layer};
use tpod_runtime::SecretFile;
use tpod_wire::pb;

use crate::blobs::BlobStore;
use crate::pod::Sealed;

/// What was sealed, and who sealed it to whom.
pub struct Opener<'a> {
    /// The enclave's encryption key.
    pub enclave: &'a SecretKey,
    /// The publisher's sealing key.
    pub sender: PublicKey,
    /// The pod.
    pub pod_id: &'a [u8; 32],
}

impl Opener<'_> {
    fn open(&self, purpose: Purpose, name: &str, sealed: &Sealed) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
        let sealed = tpod_crypto::Sealed { enc: sealed.enc.clone(), ciphertext: sealed.ciphertext.clone() };
        tpod_crypto::open(self.enclave, &self.sender, purpose, &tpod_crypto::sealing_aad(self.pod_id, name), &sealed)
            .map_err(|e| e.to_string())
    }

    /// Opens container `container`'s image keys and finds its blobs in `blobs`; the config is
    /// decrypted and verified, the layers are checked as they are unpacked.
    pub fn image(&self, container: &str, sealed: &Sealed, blobs: &BlobStore) -> Result<Image, String> {
        let plain = self.open(Purpose::Image, container, sealed)?;
        let keys: pb::ImageKeys = tpod_wire::decode(&plain).map_err(|e| format!("the sealed image keys: {e}"))?;
        let manifest_digest = digest("manifest_digest", &keys.manifest_digest)?;
        let config = keys.config.as_ref().ok_or("the sealed image keys name no config")?;
        let config = blob("config", config, blobs)?;
        let layers = keys
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let what = format!("layers[{i}]");
                let encrypted = layer.blob.as_ref().ok_or_else(|| format!("{what}: no blob"))?;
                Ok(Layer {
                    blob: blob(&what, encrypted, blobs)?,
                    gzip: layer.gzip,
                    diff_id: digest(&format!("{what}.diff_id"), &layer.diff_id)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        tpod_image::open_encrypted(manifest_digest, config, layers).map_err(|e| e.to_string())
    }

    /// Opens container `container`'s process: its command, args and env, checked against the
    /// wire limits they had in clear.
    pub fn process(&self, container: &str, sealed: &Sealed) -> Result<Process, String> {
        let plain = self.open(Purpose::Process, container, sealed)?;
        let spec: pb::ProcessSpec = tpod_wire::decode(&plain).map_err(|e| format!("the sealed process: {e}"))?;
        Ok(Process {
            command: spec.has_command.then_some(spec.command),
            args: spec.has_args.then_some(spec.args),
            env: spec.env,
        })
    }

    /// Opens secret volume `volume`'s files.
    pub fn secret(&self, volume: &str, sealed: &Sealed) -> Result<Vec<SecretFile>, String> {
        let plain = self.open(Purpose::Secret, volume, sealed)?;
        let files: pb::SecretFiles = tpod_wire::decode(&plain).map_err(|e| format!("the sealed secret: {e}"))?;
        Ok(files
            .files
            .into_iter()
            .map(|f| SecretFile { name: f.name, data: zeroize::Zeroizing::new(f.data) })
            .collect())
    }
}

/// How a container's process starts, opened: what the runtime's `ContainerSpec` takes.
#[derive(Default)]
pub struct Process {
    /// Replaces the image's Entrypoint when set.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd when set.
    pub args: Option<Vec<String>>,
    /// Set on top of the image's environment.
    pub env: std::collections::BTreeMap<String, String>,
}

fn digest(what: &str, text: &str) -> Result<Digest, String> {
    Digest::parse(text).map_err(|e| format!("{what}: {e}"))
}

/// The blob store's copy of an encrypted blob, with its key.
fn blob(what: &str, encrypted: &pb::EncryptedBlob, blobs: &BlobStore) -> Result<Blob, String> {
    let cid = ContentId::parse(&encrypted.cid).map_err(|e| format!("{what}: {e}"))?;
    let path = blobs.path(&cid).ok_or_else(|| format!("{what}: blob {cid} is not (completely) uploaded"))?;
    let key = tpod_crypto::BlobKey::from_bytes(&encrypted.key).map_err(|e| format!("{what}: {e}"))?;
    Ok(Blob {
        digest: digest(&format!("{what}.digest"), &encrypted.digest)?,
        size: encrypted.size,
        path,
        key: Some(key),
    })
}
