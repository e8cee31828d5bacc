//! A pod as the provider accepts it: the publisher's protobuf `Pod`, checked again here (the
//! network is not trusted to have run the manifest checks) and kept in the store as JSON.
//!
//! Images, secrets and each container's process (command, args, env) stay sealed here, as the
//! publisher sent them: the store on disk holds their ciphertext only, and [`crate::sealed`]
//! opens them in memory whenever a pod is (re)started. A pod that carries a command, args or env
//! in clear (the fields an earlier publisher version filled) is refused, so none ever reaches the
//! store.
//!
//! Records written by an earlier provider version may hold a container's `command`, `args` and
//! `env` in clear. They are read (so such a record still loads, for status, billing and delete),
//! never written again, and only whether one held anything is kept in memory: such a pod is not
//! started again ([`ContainerDefinition::stored_in_clear`]) and must be redeployed, as a pod whose
//! image was delivered unsealed.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
// Stored as the runtime names it (`Always`, `OnFailure`, `Never`): one definition.
pub use tpod_runtime::RestartPolicy;
use tpod_wire::pb;

/// Largest number of containers in a pod.
const MAX_CONTAINERS: usize = 16;

/// A validated pod definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodDefinition {
    /// The pod's name (a DNS label).
    pub name: String,
    /// Its containers.
    pub containers: Vec<ContainerDefinition>,
    /// Its volumes.
    #[serde(default)]
    pub volumes: Vec<VolumeDefinition>,
    /// The publisher's X25519 key its images and secrets are sealed by (HPKE auth mode).
    #[serde(default, with = "hex_key")]
    pub sealed_by: Option<[u8; 32]>,
    /// `replicas.min: 0`: the pod is scaled to zero when it receives no request for its idle
    /// timeout, here as the manifest asked (0: the provider's default; the provider's minimum
    /// applies). `None`: it always runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_after_secs: Option<u64>,
    /// `replicas.min` and `replicas.max`: how many instances of the pod run, each with its own
    /// address, rootfs and emptyDir and secret volumes; the provider adds one when the requests
    /// in flight per replica pass the target, and removes them again after the idle timeout.
    /// Records from before replicas have one.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// See `min_replicas`.
    #[serde(default = "one")]
    pub max_replicas: u32,
    /// `replicas.idleTimeout` as asked (0: the provider's default): after it, extra replicas
    /// that are no longer needed are removed.
    #[serde(default)]
    pub idle_timeout_secs: u64,
    /// `replicas.targetConcurrency`: requests in flight per replica above which another one
    /// starts; 0: the provider's default.
    #[serde(default)]
    pub target_concurrency: u32,
    /// Whether its containers are started again when they end; records from before restart
    /// policies have none: `Always`, what those pods got.
    #[serde(default)]
    pub restart_policy: RestartPolicy,
}

fn one() -> u32 {
    1
}

/// The publisher's restart policy; an earlier publisher sends none, meaning `Always`.
fn restart_policy(value: i32) -> Result<RestartPolicy, String> {
    use pb::pod::RestartPolicy as Wire;
    match Wire::try_from(value) {
        Ok(Wire::Unspecified | Wire::Always) => Ok(RestartPolicy::Always),
        Ok(Wire::OnFailure) => Ok(RestartPolicy::OnFailure),
        Ok(Wire::Never) => Ok(RestartPolicy::Never),
        Err(_) => Err(format!("restart_policy: unknown restart policy {value}")),
    }
}

/// An HPKE ciphertext sealed to the enclave (see `pb::Sealed`), stored as sent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The encapsulated key.
    #[serde(with = "hex_bytes")]
    pub enc: Vec<u8>,
    /// The ciphertext.
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({} bytes)", self.ciphertext.len())
    }
}

impl From<&pb::Sealed> for Sealed {
    fn from(sealed: &pb::Sealed) -> Self {
        Self { enc: sealed.enc.clone(), ciphertext: sealed.ciphertext.clone() }
    }
}

/// A pod volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDefinition {
    /// A DNS label, unique in the pod.
    pub name: String,
    /// `Some(size)`: a filesystem, or scratch space (`empty_dir`), of that many bytes; `None`: a
    /// secret, or scratch space that takes the provider's default size
    /// ([`PodDefinition::with_empty_dir_default`], applied at admission).
    pub size_bytes: Option<u64>,
    /// Scratch space (emptyDir): size-limited, reserved and billed as storage like a filesystem.
    /// Records written before emptyDirs had a size lack it (false, and no size).
    #[serde(default)]
    pub empty_dir: bool,
    /// A secret volume: its files, sealed.
    #[serde(default)]
    pub secret: Option<Sealed>,
}

/// A volume mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountDefinition {
    /// The volume's name.
    pub volume: String,
    /// Where, in the container.
    pub path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// One container of a [`PodDefinition`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerDefinition {
    /// A DNS label, unique in the pod.
    pub name: String,
    /// The image reference as the publisher wrote it (for display).
    pub image: String,
    /// The image's keys and blobs, sealed (`pb::ImageKeys`). `None` only in pods stored by a
    /// provider from before sealed delivery, which cannot be started again.
    #[serde(default)]
    pub sealed_image: Option<Sealed>,
    /// How its process starts (`pb::ProcessSpec`: command, args, env), sealed; `None`: as the
    /// image says.
    #[serde(default)]
    pub sealed_process: Option<Sealed>,
    /// `command`, `args` and `env` as an earlier version stored them, in clear (see the module
    /// docs): only whether they held anything.
    #[serde(default, rename = "command", skip_serializing)]
    clear_command: Legacy,
    #[serde(default, rename = "args", skip_serializing)]
    clear_args: Legacy,
    #[serde(default, rename = "env", skip_serializing)]
    clear_env: Legacy,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Exposed ports.
    pub ports: Vec<PortDefinition>,
    /// CPU limit in millicores.
    pub cpu_millis: u64,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// The most processes it may have; `None`: the provider's default.
    #[serde(default)]
    pub pids: Option<u32>,
    /// Volumes mounted into the container.
    #[serde(default)]
    pub mounts: Vec<MountDefinition>,
}

impl ContainerDefinition {
    /// Whether the record came from an earlier version that stored the container's command, args
    /// or env in clear. Such a container is not started again: its pod must be redeployed.
    pub fn stored_in_clear(&self) -> bool {
        self.clear_command.0 || self.clear_args.0 || self.clear_env.0
    }
}

/// A field an earlier version stored in clear, read as whether it held anything (a non-empty
/// list or map); what it held is dropped as it is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Legacy(bool);

impl<'de> Deserialize<'de> for Legacy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let held = match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => false,
            serde_json::Value::Array(items) => !items.is_empty(),
            serde_json::Value::Object(entries) => !entries.is_empty(),
            _ => true,
        };
        Ok(Self(held))
    }
}

/// An exposed port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDefinition {
    /// The port inside the pod.
    pub container_port: u16,
    /// Raw TCP (exposed as a host port) rather than HTTP (routed by the ingress).
    pub tcp: bool,
    /// Extra host name the ingress routes to this HTTP port.
    pub hostname: Option<String>,
}

/// What a pod reserves in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Storage (filesystem volumes) in bytes.
    pub storage_bytes: u64,
}

impl Reservation {
    /// Both together.
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            storage_bytes: self.storage_bytes.saturating_add(other.storage_bytes),
        }
    }

    /// `n` of them.
    pub fn times(self, n: u32) -> Self {
        let n = u64::from(n);
        Self {
            cpu_millis: self.cpu_millis.saturating_mul(n),
            memory_bytes: self.memory_bytes.saturating_mul(n),
            storage_bytes: self.storage_bytes.saturating_mul(n),
        }
    }

    /// What is left of `self` once `other` is taken (never below zero).
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(other.storage_bytes),
        }
    }

    /// Whether `self` fits in `free`.
    pub fn fits_in(self, free: Self) -> bool {
        self.cpu_millis <= free.cpu_millis
            && self.memory_bytes <= free.memory_bytes
            && self.storage_bytes <= free.storage_bytes
    }
}

impl std::fmt::Display for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu {}m, memory {} bytes, storage {} bytes", self.cpu_millis, self.memory_bytes, self.storage_bytes)
    }
}

impl PodDefinition {
    /// Checks a publisher's pod. The error names the field, like the manifest's errors do.
    pub fn from_proto(pod: &pb::Pod) -> Result<Self, String> {
        label("name", &pod.name)?;
        let restart_policy = restart_policy(pod.restart_policy)?;
        if pod.containers.is_empty() || pod.containers.len() > MAX_CONTAINERS {
            return Err(format!("containers: a pod has 1 to {MAX_CONTAINERS} containers"));
        }
        let mut volumes = Vec::with_capacity(pod.volumes.len());
        for (i, v) in pod.volumes.iter().enumerate() {
            label(&format!("volumes[{i}].name"), &v.name)?;
            if volumes.iter().any(|d: &VolumeDefinition| d.name == v.name) {
                return Err(format!("volumes[{i}].name: duplicate volume name {:?}", v.name));
            }
            let (size_bytes, secret) = match &v.kind {
                Some(pb::volume::Kind::EmptyDir(e)) => ((e.size_bytes > 0).then_some(e.size_bytes), None),
                Some(pb::volume::Kind::Filesystem(f)) if f.size_bytes > 0 => (Some(f.size_bytes), None),
                Some(pb::volume::Kind::Filesystem(_)) => {
                    return Err(format!("volumes[{i}].filesystem.size_bytes: must be greater than zero"));
                }
                Some(pb::volume::Kind::Secret(secret)) => {
                    let sealed = secret.sealed.as_ref().ok_or_else(|| {
                        format!(
                            "volumes[{i}].secret.sealed: missing: a secret must be sealed to this provider's enclave"
                        )
                    })?;
                    (None, Some(Sealed::from(sealed)))
                }
                None => return Err(format!("volumes[{i}]: no kind (emptyDir, filesystem or secret)")),
            };
            let empty_dir = matches!(v.kind, Some(pb::volume::Kind::EmptyDir(_)));
            volumes.push(VolumeDefinition { name: v.name.clone(), size_bytes, secret, empty_dir });
        }
        let replicas = pod.replicas.unwrap_or(pb::Replicas { min: 1, max: 1, ..Default::default() });
        if replicas.max == 0 || replicas.max > tpod_manifest::MAX_REPLICAS {
            return Err(format!("replicas.max: {} is not from 1 to {}", replicas.max, tpod_manifest::MAX_REPLICAS));
        }
        if replicas.min > replicas.max {
            return Err(format!("replicas.min: {} exceeds max ({})", replicas.min, replicas.max));
        }
        let scale_to_zero_after_secs = (replicas.min == 0).then_some(replicas.idle_timeout_secs);
        let has_port = pod.containers.iter().any(|c| !c.ports.is_empty());
        if scale_to_zero_after_secs.is_some() && !has_port {
            return Err("replicas.min: 0 needs a port: the pod is woken by a request or connection".into());
        }
        if replicas.max > 1 {
            if !has_port {
                return Err("replicas.max: replicas share the pod's requests, but it has no port".into());
            }
            if restart_policy != RestartPolicy::Always {
                return Err("replicas.max: replicas serve requests; a job (restartPolicy OnFailure or Never) runs \
                            once, with max: 1"
                    .into());
            }
            if let Some(v) = volumes.iter().find(|v| v.size_bytes.is_some() && !v.empty_dir) {
                return Err(format!(
                    "replicas.max: {} replicas cannot share the filesystem volume {:?}: each would write its own copy",
                    replicas.max, v.name
                ));
            }
        }
        let mut names = BTreeSet::new();
        let mut ports = BTreeSet::new();
        let mut hosts = BTreeSet::new();
        let mut containers = Vec::with_capacity(pod.containers.len());
        for (i, c) in pod.containers.iter().enumerate() {
            let at = |field: &str| format!("containers[{i}].{field}");
            label(&at("name"), &c.name)?;
            if !names.insert(c.name.clone()) {
                return Err(format!("{}: duplicate container name {:?}", at("name"), c.name));
            }
            let sealed_image = c.sealed_image.as_ref().map(Sealed::from).ok_or_else(|| {
                format!("{}: missing: images are delivered sealed to this provider's enclave", at("sealed_image"))
            })?;
            // Nothing of a process may reach the store in clear. The values are not quoted: they
            // may be secrets.
            for (field, set) in
                [("command", !c.command.is_empty()), ("args", !c.args.is_empty()), ("env", !c.env.is_empty())]
            {
                if set {
                    return Err(format!(
                        "{}: set in clear: a container's command, args and env must be sealed to this provider's \
                         enclave (sealed_process); a newer tpod does that",
                        at(field)
                    ));
                }
            }
            if !c.working_dir.is_empty() && !c.working_dir.starts_with('/') {
                return Err(format!("{}: {:?} is not an absolute path", at("working_dir"), c.working_dir));
            }
            let mut mounts = Vec::with_capacity(c.volume_mounts.len());
            for (j, m) in c.volume_mounts.iter().enumerate() {
                let at = |field: &str| format!("containers[{i}].volume_mounts[{j}].{field}");
                if !volumes.iter().any(|v| v.name == m.name) {
                    return Err(format!("{}: no volume named {:?} in the pod", at("name"), m.name));
                }
                if !m.mount_path.starts_with('/') || m.mount_path == "/" || m.mount_path.split('/').any(|p| p == "..") {
                    return Err(format!("{}: {:?} is not an absolute path below /", at("mount_path"), m.mount_path));
                }
                if mounts.iter().any(|x: &MountDefinition| x.path == m.mount_path) {
                    return Err(format!("{}: {:?} is mounted twice", at("mount_path"), m.mount_path));
                }
                mounts.push(MountDefinition {
                    volume: m.name.clone(),
                    path: m.mount_path.clone(),
                    read_only: m.read_only,
                });
            }
            let resources = c.resources.unwrap_or_default();
            if resources.cpu_millis == 0 || resources.memory_bytes == 0 {
                return Err(format!("{}: cpu and memory must be greater than zero", at("resources")));
            }
            if resources.gpu > 0 {
                return Err(format!("{}: this provider offers no GPUs", at("resources.gpu")));
            }
            let mut port_defs = Vec::with_capacity(c.ports.len());
            for (j, p) in c.ports.iter().enumerate() {
                let at = |field: &str| format!("containers[{i}].ports[{j}].{field}");
                let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("{}: {} is not a port from 1 to 65535", at("container_port"), p.container_port)
                })?;
                if !ports.insert(port) {
                    return Err(format!("{}: port {port} is exposed twice in the pod", at("container_port")));
                }
                let tcp = p.protocol == pb::port::Protocol::Tcp as i32;
                let hostname = match p.hostname.as_str() {
                    "" => None,
                    _ if tcp => return Err(format!("{}: only HTTP ports have host names", at("hostname"))),
                    host => {
                        let host = host.to_ascii_lowercase();
                        dns_name(&at("hostname"), &host)?;
                        if !hosts.insert(host.clone()) {
                            return Err(format!("{}: host name {host:?} is used twice", at("hostname")));
                        }
                        Some(host)
                    }
                };
                port_defs.push(PortDefinition { container_port: port, tcp, hostname });
            }
            containers.push(ContainerDefinition {
                name: c.name.clone(),
                image: c.image.clone(),
                sealed_image: Some(sealed_image),
                sealed_process: c.sealed_process.as_ref().map(Sealed::from),
                clear_command: Legacy::default(),
                clear_args: Legacy::default(),
                clear_env: Legacy::default(),
                working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
                ports: port_defs,
                cpu_millis: resources.cpu_millis,
                memory_bytes: resources.memory_bytes,
                pids: (resources.pids > 0).then_some(resources.pids),
                mounts,
            });
        }
        let sealed_by = <[u8; 32]>::try_from(pod.sealed_by.as_slice())
            .map_err(|_| "sealed_by: missing: the publisher key that sealed the images (32 bytes)".to_owned())?;
        Ok(Self {
            name: pod.name.clone(),
            containers,
            volumes,
            sealed_by: Some(sealed_by),
            scale_to_zero_after_secs,
            min_replicas: replicas.min,
            idle_timeout_secs: replicas.idle_timeout_secs,
            max_replicas: replicas.max,
            target_concurrency: replicas.target_concurrency,
            restart_policy,
        })
    }

    /// The pod with `bytes` as the size of its emptyDir volumes that name none.
    pub fn with_empty_dir_default(mut self, bytes: u64) -> Self {
        for v in self.volumes.iter_mut().filter(|v| v.empty_dir && v.size_bytes.is_none()) {
            v.size_bytes = Some(bytes);
        }
        self
    }

    /// The resources the pod holds on the provider: room for every replica it may scale to.
    pub fn capacity(&self) -> Reservation {
        self.reservation().times(self.max_replicas.max(1))
    }

    /// The resources one replica of the pod reserves: storage counts filesystem and emptyDir
    /// volumes.
    pub fn reservation(&self) -> Reservation {
        let storage_bytes = self.volumes.iter().filter_map(|v| v.size_bytes).fold(0u64, u64::saturating_add);
        self.containers.iter().fold(Reservation { storage_bytes, ..Reservation::default() }, |r, c| Reservation {
            cpu_millis: r.cpu_millis.saturating_add(c.cpu_millis),
            memory_bytes: r.memory_bytes.saturating_add(c.memory_bytes),
            storage_bytes: r.storage_bytes,
        })
    }

    /// The pod's HTTP ports, with the extra host name each asks for.
    pub fn http_ports(&self) -> impl Iterator<Item = &PortDefinition> {
        self.containers.iter().flat_map(|c| &c.ports).filter(|p| !p.tcp)
    }

    /// The pod's TCP ports.
    pub fn tcp_ports(&self) -> impl Iterator<Item = u16> {
        self.containers.iter().flat_map(|c| &c.ports).filter(|p| p.tcp).map(|p| p.container_port)
    }
}

/// The DNS label a pod is served under: the first 16 hex digits of its id (a full 64-digit id
/// does not fit a 63-character DNS label). The store keeps labels unique like any host name.
pub fn pod_label(pod_id: &[u8; 32]) -> String {
    pod_id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn label(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok { Ok(()) } else { Err(format!("{field}: {value:?} is not a DNS label (a-z, 0-9, '-', at most 63)")) }
}

/// Bytes as a lowercase hex string in the store's JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&alloy::hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        alloy::hex::decode(String::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

/// An optional 32-byte key as hex.
mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(key: &Option<[u8; 32]>, serializer: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(key) => serializer.serialize_some(&alloy::hex::encode(key)),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<[u8; 32]>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| {
                let bytes = alloy::hex::decode(text).map_err(D::Error::custom)?;
                <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| D::Error::custom("expected 32 bytes"))
            })
            .transpose()
    }
}

fn dns_name(field: &str, value: &str) -> Result<(), String> {
    if value.len() > 253 || !value.contains('.') {
        return Err(format!("{field}: {value:?} is not a DNS name with a dot"));
    }
    value.split('.').try_for_each(|part| label(field, part))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod() -> pb::Pod {
        pb::Pod {
            name: "hello".into(),
            containers: vec![pb::Container {
                name: "web".into(),
                image: "./image".into(),
                sealed_image: Some(pb::Sealed { enc: vec![1; 32], ciphertext: vec![2; 100] }),
                ports: vec![pb::Port {
                    container_port: 8080,
                    protocol: pb::port::Protocol::Http as i32,
                    hostname: "App.Example.com".into(),
                }],
                resources: Some(pb::Resources {
                    cpu_millis: 100,
                    memory_bytes: 1 << 26,
                    gpu: 0,
                    storage_bytes: 0,
                    pids: 0,
                }),
                ..Default::default()
            }],
            volumes: vec![],
            replicas: None,
            sealed_by: vec![3; 32],
            restart_policy: 0,
        }
    }

    #[test]
    fn a_good_pod_is_accepted_with_lowercased_host_names() {
        let def = PodDefinition::from_proto(&pod()).unwrap();
        assert_eq!(def.containers[0].ports[0].hostname.as_deref(), Some("app.example.com"));
        assert_eq!(def.reservation(), Reservation { cpu_millis: 100, memory_bytes: 1 << 26, storage_bytes: 0 });
        assert_eq!(def.containers[0].sealed_process, None);
        assert!(!def.containers[0].stored_in_clear());
    }

    #[test]
    fn a_process_in_clear_is_refused_naming_the_field_not_the_value() {
        for (field, change) in [
            ("command", (|c: &mut pb::Container| c.command = vec!["/bin/app".into()]) as fn(&mut pb::Container)),
            ("args", |c| c.args = vec!["--token=clear-value".into()]),
            ("env", |c| drop(c.env.insert("TOKEN".into(), "clear-value".into()))),
        ] {
            let mut p = pod();
            change(&mut p.containers[0]);
            let err = PodDefinition::from_proto(&p).unwrap_err();
            assert!(err.starts_with(&format!("containers[0].{field}: set in clear")), "{err}");
            assert!(err.contains("sealed_process") && !err.contains("clear-value"), "{err}");
        }
        // Sealed, it is kept as sent.
        let mut p = pod();
        p.containers[0].sealed_process = Some(pb::Sealed { enc: vec![6; 32], ciphertext: vec![7; 40] });
        let def = PodDefinition::from_proto(&p).unwrap();
        assert_eq!(def.containers[0].sealed_process.as_ref().unwrap().ciphertext, vec![7; 40]);
    }

    #[test]
    fn records_with_a_process_in_clear_load_but_keep_nothing_of_it() {
        let def = PodDefinition::from_proto(&pod()).unwrap();
        let json = serde_json::to_string(&def).unwrap();
        assert!(!json.contains("\"env\"") && !json.contains("\"command\""), "{json}");
        // As an earlier version wrote it: the process in clear, or with nothing set.
        let old = |fields: &str| json.replacen("\"name\":\"web\",", &format!("\"name\":\"web\",{fields}"), 1);
        let clear = old(r#""command":null,"args":["--token","clear-value"],"env":{"TOKEN":"clear-value"},"#);
        let read: PodDefinition = serde_json::from_str(&clear).unwrap();
        assert!(read.containers[0].stored_in_clear());
        assert!(!format!("{read:?}").contains("clear-value"), "{read:?}");
        // Written again, it holds nothing of it.
        assert!(!serde_json::to_string(&read).unwrap().contains("clear-value"));
        let empty: PodDefinition = serde_json::from_str(&old(r#""command":null,"args":null,"env":{},"#)).unwrap();
        assert!(!empty.containers[0].stored_in_clear());
        assert_eq!(empty, def);
    }

    #[test]
    fn restart_policies_are_kept_and_old_records_restart_always() {
        use pb::pod::RestartPolicy as Wire;
        for (wire, policy) in [
            (Wire::Unspecified, RestartPolicy::Always),
            (Wire::Always, RestartPolicy::Always),
            (Wire::OnFailure, RestartPolicy::OnFailure),
            (Wire::Never, RestartPolicy::Never),
        ] {
            let def = PodDefinition::from_proto(&pb::Pod { restart_policy: wire.into(), ..pod() }).unwrap();
            assert_eq!(def.restart_policy, policy);
            let json = serde_json::to_string(&def).unwrap();
            assert_eq!(serde_json::from_str::<PodDefinition>(&json).unwrap(), def);
        }
        let err = PodDefinition::from_proto(&pb::Pod { restart_policy: 9, ..pod() }).unwrap_err();
        assert_eq!(err, "restart_policy: unknown restart policy 9");
        // A record written before restart policies.
        let def = PodDefinition::from_proto(&pb::Pod { restart_policy: Wire::Never.into(), ..pod() }).unwrap();
        let json = serde_json::to_string(&def).unwrap().replace(",\"restart_policy\":\"Never\"", "");
        assert!(!json.contains("restart_policy"), "{json}");
        assert_eq!(serde_json::from_str::<PodDefinition>(&json).unwrap().restart_policy, RestartPolicy::Always);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut p = pod();
        let again = p.containers[0].ports[0].clone();
        p.containers[0].ports.push(again);
        let err = PodDefinition::from_proto(&p).unwrap_err();
        assert!(err.starts_with("containers[0].ports[1].container_port: port 8080 is exposed twice"), "{err}");

        let mut p = pod();
        p.containers[0].sealed_image = None;
        assert!(PodDefinition::from_proto(&p).unwrap_err().starts_with("containers[0].sealed_image: missing"));

        let mut p = pod();
        p.sealed_by = vec![];
        assert!(PodDefinition::from_proto(&p).unwrap_err().starts_with("sealed_by: missing"));

        let mut p = pod();
        p.volumes.push(pb::Volume {
            name: "keys".into(),
            kind: Some(pb::volume::Kind::Secret(pb::volume::Secret { sealed: None })),
        });
        assert!(PodDefinition::from_proto(&p).unwrap_err().starts_with("volumes[0].secret.sealed: missing"));

        let mut p = pod();
        p.containers[0].ports[0].hostname = "a..b".into();
        assert!(PodDefinition::from_proto(&p).unwrap_err().starts_with("containers[0].ports[0].hostname"));

        let mut p = pod();
        p.containers[0].resources = None;
        assert!(PodDefinition::from_proto(&p).unwrap_err().contains("greater than zero"));
    }

    #[test]
    fn empty_dirs_are_reserved_as_storage_with_the_default_size() {
        let mut p = pod();
        for (name, size_bytes) in [("sized", 5 << 20), ("default", 0)] {
            p.volumes.push(pb::Volume {
                name: name.into(),
                kind: Some(pb::volume::Kind::EmptyDir(pb::volume::EmptyDir { size_bytes })),
            });
        }
        p.volumes.push(pb::Volume {
            name: "fs".into(),
            kind: Some(pb::volume::Kind::Filesystem(pb::volume::Filesystem { size_bytes: 3 << 20 })),
        });
        let def = PodDefinition::from_proto(&p).unwrap().with_empty_dir_default(1 << 30);
        let sizes: Vec<_> = def.volumes.iter().map(|v| (v.size_bytes, v.empty_dir)).collect();
        assert_eq!(sizes, [(Some(5 << 20), true), (Some(1 << 30), true), (Some(3 << 20), false)]);
        assert_eq!(def.reservation().storage_bytes, (5 << 20) + (1 << 30) + (3 << 20));
        // A stored record from before emptyDirs had a size reads back as no emptyDir flag.
        let json = serde_json::to_string(&def).unwrap().replace(",\"empty_dir\":true", "");
        let old: PodDefinition = serde_json::from_str(&json).unwrap();
        assert!(old.volumes.iter().all(|v| !v.empty_dir));
    }

    #[test]
    fn sealed_parts_are_stored_as_hex_and_read_back() {
        let mut p = pod();
        let sealed = pb::Sealed { enc: vec![4; 32], ciphertext: vec![5; 10] };
        p.volumes.push(pb::Volume {
            name: "keys".into(),
            kind: Some(pb::volume::Kind::Secret(pb::volume::Secret { sealed: Some(sealed) })),
        });
        let def = PodDefinition::from_proto(&p).unwrap();
        let json = serde_json::to_string(&def).unwrap();
        assert!(json.contains(&"05".repeat(10)), "{json}");
        assert_eq!(serde_json::from_str::<PodDefinition>(&json).unwrap(), def);
        // Debug output shows sizes, not ciphertext.
        assert!(!format!("{def:?}").contains("[5, 5"), "{def:?}");
    }

    #[test]
    fn replicas_reserve_room_for_max_and_refuse_what_they_cannot_share() {
        let replicas = |min, max| pb::Replicas { min, max, idle_timeout_secs: 0, target_concurrency: 7 };
        let def = PodDefinition::from_proto(&pb::Pod { replicas: Some(replicas(1, 3)), ..pod() }).unwrap();
        assert_eq!((def.min_replicas, def.max_replicas, def.target_concurrency), (1, 3, 7));
        assert_eq!(def.capacity(), def.reservation().times(3));
        assert_eq!(def.capacity().memory_bytes, 3 << 26);
        // Records from before replicas run one.
        let json = serde_json::to_string(&PodDefinition::from_proto(&pod()).unwrap()).unwrap();
        let old: PodDefinition = serde_json::from_str(
            &json
                .replace(",\"min_replicas\":1,\"max_replicas\":1,\"idle_timeout_secs\":0,\"target_concurrency\":0", ""),
        )
        .unwrap();
        assert_eq!((old.min_replicas, old.max_replicas, old.capacity()), (1, 1, old.reservation()));

        let refused = |p: pb::Pod| PodDefinition::from_proto(&p).unwrap_err();
        assert!(refused(pb::Pod { replicas: Some(replicas(0, 17)), ..pod() }).starts_with("replicas.max: 17"));
        assert!(refused(pb::Pod { replicas: Some(replicas(3, 2)), ..pod() }).starts_with("replicas.min: 3 exceeds"));
        let job =
            pb::Pod { replicas: Some(replicas(1, 2)), restart_policy: pb::pod::RestartPolicy::Never.into(), ..pod() };
        assert!(refused(job).contains("a job"));
        let mut shared = pb::Pod { replicas: Some(replicas(1, 2)), ..pod() };
        shared.volumes.push(pb::Volume {
            name: "data".into(),
            kind: Some(pb::volume::Kind::Filesystem(pb::volume::Filesystem { size_bytes: 1 << 20 })),
        });
        assert!(refused(shared.clone()).contains("cannot share the filesystem volume \"data\""));
        shared.volumes[0].kind = Some(pb::volume::Kind::EmptyDir(pb::volume::EmptyDir { size_bytes: 1 << 20 }));
        assert_eq!(PodDefinition::from_proto(&shared).unwrap().capacity().storage_bytes, 2 << 20);
    }

    #[test]
    fn pod_label_is_sixteen_hex_digits() {
        let mut id = [0u8; 32];
        id[0] = 0xab;
        assert_eq!(pod_label(&id), "ab00000000000000");
    }
}
