//! Confidential delivery into a real provider daemon (real anvil, libp2p, containers): a pod
//! whose image, secret and process (command, args, env) were encrypted and sealed the way the CLI
//! does it deploys, serves what it should, and leaves nothing readable on the provider's disk,
//! neither in its store nor in the runtime's state; images, secrets and processes that are not
//! sealed by the publisher to this enclave for this pod are refused with nothing deployed, and so
//! is a process sent in clear; blobs that do not match their CID are refused; an upload cut by a
//! provider restart resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use alloy::primitives::B256;
use common::{Fixture, MIN_FUNDING, fixture, now, refused, signed};
use prost::Message;
use tpod_crypto::{ContentId, PublicKey, Purpose, SecretKey, sealing_aad};
use tpod_image::EncryptedImage;
use tpod_wire::pb;

const IMAGE_MARKER: &str = "image-marker-5d1c0b7e2a";
const SECRET_MARKER: &str = "secret-marker-9f4e7a3d61";

/// A hello image (busybox httpd) whose page holds [`IMAGE_MARKER`], encrypted like the CLI does.
fn encrypted_hello(dir: &Path) -> EncryptedImage {
    let page = dir.join("index.html");
    std::fs::write(&page, format!("hello {IMAGE_MARKER}\n")).unwrap();
    let layout = dir.join("layout");
    tpod_image::hello::build(&layout, Path::new("/bin/busybox"), &page).unwrap();
    let image = tpod_image::read_layout(&layout).unwrap();
    tpod_image::encrypt_image(&image, &dir.join("cache")).unwrap()
}

fn seal(sender: &SecretKey, to: &PublicKey, purpose: Purpose, pod_id: B256, name: &str, plain: &[u8]) -> pb::Sealed {
    let sealed = tpod_crypto::seal(sender, to, purpose, &sealing_aad(&pod_id.0, name), plain).unwrap();
    pb::Sealed { enc: sealed.enc, ciphertext: sealed.ciphertext }
}

/// Markers of the pod's process, random so that no copy of them exists anywhere before the test
/// sends them: one in its env, one in its args, one in a log line it prints.
struct Markers {
    env: String,
    arg: String,
    log: String,
}

impl Markers {
    fn new() -> Self {
        let random = |what: &str| format!("{what}-marker-{}", alloy::hex::encode(&B256::random()[..10]));
        Self { env: random("env"), arg: random("arg"), log: random("log") }
    }

    /// The pod's process: it prints a log line, writes its env and arg markers to pages of its
    /// in-memory rootfs, copies the secret into its file system volume (so that what a pod
    /// writes is checked to be encrypted on disk), and serves all of it.
    fn process(&self) -> pb::ProcessSpec {
        let script = format!(
            "echo \"{log} $ENV_MARKER\"; echo \"$ENV_MARKER\" > /www/env.html; echo {arg} > /www/arg.html; \
             cat /www/keys/token > /www/state/copy && sync && exec /bin/busybox httpd -f -p 8080 -h /www",
            log = self.log,
            arg = self.arg,
        );
        pb::ProcessSpec {
            command: vec!["/bin/busybox".into(), "sh".into(), "-c".into()],
            has_command: true,
            args: vec![script],
            has_args: true,
            env: [("ENV_MARKER".to_owned(), self.env.clone())].into(),
        }
    }
}

/// A one-container pod serving its image's page, with the secret mounted under the web root and
/// its process (see [`Markers::process`]) sealed as `process`.
fn provision(
    sealed_by: &SecretKey,
    image: pb::Sealed,
    secret: pb::Sealed,
    process: pb::Sealed,
) -> pb::provision_request::Action {
    pb::provision_request::Action::Provision(pb::Provision {
        pod: Some(pb::Pod {
            name: "web".into(),
            containers: vec![pb::Container {
                name: "web".into(),
                image: "./hello".into(),
                sealed_image: Some(image),
                sealed_process: Some(process),
                ports: vec![pb::Port {
                    container_port: 8080,
                    protocol: pb::port::Protocol::Http as i32,
                    hostname: String::new(),
                }],
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_bytes: 64 << 20,
                    gpu: 0,
                    storage_bytes: 0,
                    pids: 0,
                }),
                volume_mounts: vec![
                    pb::VolumeMount { name: "keys".into(), mount_path: "/www/keys".into(), read_only: true },
                    pb::VolumeMount { name: "state".into(), mount_path: "/www/state".into(), read_only: false },
                ],
                ..Default::default()
            }],
            volumes: vec![
                pb::Volume {
                    name: "keys".into(),
                    kind: Some(pb::volume::Kind::Secret(pb::volume::Secret { sealed: Some(secret) })),
                },
                pb::Volume {
                    name: "state".into(),
                    kind: Some(pb::volume::Kind::Filesystem(pb::volume::Filesystem { size_bytes: 4 << 20 })),
                },
            ],
            sealed_by: sealed_by.public().as_bytes().to_vec(),
            ..Default::default()
        }),
        pricing: Some(tpod_billing::PriceTable::default().to_proto("", "")),
    })
}

fn secret_files() -> Vec<u8> {
    let file = pb::SecretFile { name: "token".into(), data: format!("{SECRET_MARKER}\n").into_bytes() };
    pb::SecretFiles { files: vec![file] }.encode_to_vec()
}

async fn enclave_key(f: &Fixture) -> PublicKey {
    PublicKey::from_bytes(&f.attested().await.binding.enclave_encryption_key).unwrap()
}

async fn push_all(f: &Fixture, image: &EncryptedImage) {
    for blob in image.blobs() {
        f.client.push_blob(f.peer, f.addr.clone(), &blob.cid, &blob.path, |_| {}).await.unwrap();
    }
}

/// GET `path` from the pod through the provider's ingress (in this process), by host name.
async fn get(f: &Fixture, host: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(f.info().ingress.as_str()).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

/// The regular files under `root`; with `one_file_system`, not crossing into other file systems
/// (the in-memory rootfs and secret volumes are tmpfs mounts: memory, not the provider's disk).
fn files_under(root: &Path, one_file_system: bool) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(root).unwrap().dev();
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            if one_file_system && meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Files on the provider's disk under `root` that hold `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(root, true)
        .into_iter()
        .filter(|path| std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[tokio::test]
async fn only_what_the_publisher_sealed_to_this_enclave_deploys_and_nothing_is_on_disk_in_clear() {
    let f = fixture("tpd1", "10.241.0.0/16").await;
    let tmp = tempfile::tempdir().unwrap();
    let image = encrypted_hello(tmp.path());
    push_all(&f, &image).await;
    let enclave = enclave_key(&f).await;
    let publisher = SecretKey::generate();
    let keys = image.keys().encode_to_vec();
    let markers = Markers::new();
    let process = markers.process().encode_to_vec();
    let enclave_signer = f.info().enclave_signer;
    let provider = f.info().provider_address;
    let mut nonce = 1;
    let mut deploy = async |pod_id: B256, action: pb::provision_request::Action| {
        nonce += 1;
        f.send(signed(&f.chain, &f.publisher, pod_id, action, nonce, now() + 60)).await
    };

    // Image keys sealed to another enclave.
    let pod_id = B256::random();
    f.channel(provider, pod_id, MIN_FUNDING, enclave_signer).await;
    let elsewhere = SecretKey::generate().public();
    let action = provision(
        &publisher,
        seal(&publisher, &elsewhere, Purpose::Image, pod_id, "web", &keys),
        seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    refused(deploy(pod_id, action).await, 400, "image of container \"web\": cannot open");
    f.assert_nothing_kept();

    // A secret sealed by a key other than the one the signed pod names.
    let intruder = SecretKey::generate();
    let action = provision(
        &publisher,
        seal(&publisher, &enclave, Purpose::Image, pod_id, "web", &keys),
        seal(&intruder, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    refused(deploy(pod_id, action).await, 400, "secret volume \"keys\": cannot open");
    f.assert_nothing_kept();

    // Image keys sealed for another pod.
    let other_pod = B256::random();
    let action = provision(
        &publisher,
        seal(&publisher, &enclave, Purpose::Image, other_pod, "web", &keys),
        seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    refused(deploy(pod_id, action).await, 400, "cannot open");

    // Keys naming a blob the provider does not hold.
    let mut missing = image.keys();
    missing.layers[0].blob.as_mut().unwrap().cid = ContentId::of(b"never uploaded").to_string();
    let action = provision(
        &publisher,
        seal(&publisher, &enclave, Purpose::Image, pod_id, "web", &missing.encode_to_vec()),
        seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    refused(deploy(pod_id, action).await, 400, "is not (completely) uploaded");
    f.assert_nothing_kept();

    // A process sealed as a secret, or for another container.
    for (purpose, name) in [(Purpose::Secret, "web"), (Purpose::Process, "db")] {
        let action = provision(
            &publisher,
            seal(&publisher, &enclave, Purpose::Image, pod_id, "web", &keys),
            seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
            seal(&publisher, &enclave, purpose, pod_id, name, &process),
        );
        refused(deploy(pod_id, action).await, 400, "process of container \"web\": cannot open");
        f.assert_nothing_kept();
    }

    // The env in clear, as an earlier tpod sent it: refused, naming the field and not the value.
    let mut action = provision(
        &publisher,
        seal(&publisher, &enclave, Purpose::Image, pod_id, "web", &keys),
        seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    if let pb::provision_request::Action::Provision(pb::Provision { pod: Some(pod), .. }) = &mut action {
        pod.containers[0].env = markers.process().env;
    }
    let err = deploy(pod_id, action).await.expect_err("a clear env is refused");
    assert_eq!(err.code, 400, "{}", err.message);
    assert!(err.message.contains("containers[0].env: set in clear"), "{}", err.message);
    assert!(err.message.contains("sealed") && !err.message.contains(&markers.env), "{}", err.message);
    f.assert_nothing_kept();

    // Sealed right: it runs, serves its page and its secret.
    let action = provision(
        &publisher,
        seal(&publisher, &enclave, Purpose::Image, pod_id, "web", &keys),
        seal(&publisher, &enclave, Purpose::Secret, pod_id, "keys", &secret_files()),
        seal(&publisher, &enclave, Purpose::Process, pod_id, "web", &process),
    );
    let status = deploy(pod_id, action).await.unwrap();
    assert_eq!(status.state, "running", "{status:?}");
    let host = status.url.trim_start_matches("http://").split([':', '/']).next().unwrap().to_owned();
    let mut page = String::new();
    for _ in 0..50 {
        page = get(&f, &host, "/").await;
        if page.contains(IMAGE_MARKER) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(page.contains(IMAGE_MARKER), "{page}");
    assert!(get(&f, &host, "/keys/token").await.contains(SECRET_MARKER));
    // The process got its env and args, opened in the enclave.
    assert!(get(&f, &host, "/env.html").await.contains(&markers.env));
    assert!(get(&f, &host, "/arg.html").await.contains(&markers.arg));
    // The pod wrote the secret to its file system volume, and reads it back.
    assert!(get(&f, &host, "/state/copy").await.contains(SECRET_MARKER));
    let images: Vec<_> = files_under(&f.data, true).into_iter().filter(|p| p.ends_with("disk.img")).collect();
    assert_eq!(images.len(), 1, "{images:?}");

    // The log line was written (sealed) before the server started.
    let log = f.data.join("pods").join(alloy::hex::encode(pod_id)).join("logs/web.log");
    assert!(std::fs::metadata(&log).unwrap().len() > 0, "{} is empty", log.display());
    assert!(f.data.join("state.redb").is_file());

    // Neither the image, nor the secret, nor the process's env, args or output is anywhere on
    // the provider's disk in clear: not in the store (`state.redb`), the runtime's state, the
    // logs, nor the volume image the pod wrote the secret to.
    for marker in [IMAGE_MARKER, SECRET_MARKER, &markers.env, &markers.arg, &markers.log] {
        let found = files_containing(&f.data, marker.as_bytes());
        assert!(found.is_empty(), "{marker} in clear in {found:?}");
    }
    // Nor is the container's runtime spec on the disk: it lives in the container's tmpfs.
    let on_disk: Vec<_> = files_under(&f.data, true).into_iter().filter(|p| p.ends_with("config.json")).collect();
    assert!(on_disk.is_empty(), "runtime spec on the disk: {on_disk:?}");
}

#[tokio::test]
async fn blobs_that_are_not_their_cid_are_refused_and_a_cut_upload_resumes() {
    let mut f = fixture("tpd2", "10.242.0.0/16").await;
    let tmp = tempfile::tempdir().unwrap();

    // Content that is not what its CID names: refused once complete, and not kept.
    let file = tmp.path().join("blob");
    std::fs::write(&file, vec![7u8; 3 << 20]).unwrap();
    let wrong = ContentId::of(b"something else");
    let err = f.client.push_blob(f.peer, f.addr.clone(), &wrong, &file, |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("422") && err.contains("CID"), "{err}");
    let state = f.client.blob_state(f.peer, f.addr.clone(), &wrong, 3 << 20).await.unwrap();
    assert_eq!((state.complete, state.received), (false, 0));

    // A 48 MiB upload cut by a provider restart half-way resumes where the provider's copy ends.
    let total = 48u64 << 20;
    let mut data = vec![0u8; total as usize];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut data {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    std::fs::write(&file, &data).unwrap();
    let cid = ContentId::of(&data);
    let (half_tx, half_rx) = tokio::sync::oneshot::channel();
    let mut half_tx = Some(half_tx);
    let client = f.client.clone();
    let (peer, addr, path) = (f.peer, f.addr.clone(), file.clone());
    let upload = tokio::spawn(async move {
        client
            .push_blob(peer, addr, &cid, &path, move |progress| {
                if progress.held >= total / 2
                    && let Some(tx) = half_tx.take()
                {
                    let _ = tx.send(());
                }
            })
            .await
    });
    half_rx.await.unwrap();
    f.restart().await;
    // The first push fails: its provider went away, and the new one listens elsewhere.
    let first = upload.await.unwrap();
    assert!(first.is_err(), "{first:?}");
    let state = f.client.blob_state(f.peer, f.addr.clone(), &cid, total).await.unwrap();
    assert!(state.received >= total / 4 && state.received < total, "{state:?}");
    let report = f.client.push_blob(f.peer, f.addr.clone(), &cid, &file, |_| {}).await.unwrap();
    assert_eq!(report.resumed_from, state.received);
    assert_eq!(report.sent, total - state.received, "{report:?}");
    assert!(f.client.blob_state(f.peer, f.addr.clone(), &cid, total).await.unwrap().complete);
    let store = tpod_provider::blobs::BlobStore::open(f.data.join("blobs")).unwrap();
    assert!(std::fs::read(store.path(&cid).unwrap()).unwrap() == data, "the stored blob differs");
}
