//! Decoding and validation: walks the spanned tree into the typed [`Manifest`], collecting every
//! problem (with its position and field path) instead of stopping at the first one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Location, ManifestError};
use crate::model::{
    Container, Image, ImageKind, Manifest, Port, Protocol, Replicas, Resources, RestartPolicy, Volume, VolumeMount,
    VolumeSource,
};
use crate::quantity::{parse_bytes, parse_cpu_millis};
use crate::tree::{Key, Node, Pos, Value};
use crate::{MAX_CONTAINERS, MAX_IDLE_TIMEOUT_SECS, MAX_REPLICAS};

/// Collects errors for one file.
struct Ctx<'f> {
    file: &'f Path,
    errors: Vec<ManifestError>,
}

impl Ctx<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        let location = Location { file: self.file.to_path_buf(), line: pos.line, column: pos.column };
        self.errors.push(ManifestError::Invalid { location, path: path.to_owned(), message: message.into() });
    }
}

/// Pod-wide facts that containers are checked against.
#[derive(Default)]
struct Pod {
    /// Volume names that exist.
    volumes: Vec<String>,
    /// Port number -> path of the port that claimed it first.
    ports: HashMap<u16, String>,
    /// Hostname -> path of the port that claimed it first.
    hostnames: HashMap<String, String>,
}

fn field(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// A mapping whose keys have been checked against the schema.
struct Fields<'a> {
    pos: Pos,
    path: String,
    entries: &'a [(Key, Node)],
}

impl<'a> Fields<'a> {
    /// Checks that `node` is a mapping with no keys outside `allowed`, reporting each unknown key.
    fn new(ctx: &mut Ctx<'_>, node: &'a Node, path: &str, allowed: &[&str]) -> Option<Self> {
        let Value::Map(entries) = &node.value else {
            ctx.error(node.pos, path, format!("expected a mapping, found {}", node.kind()));
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                let message = if allowed.is_empty() {
                    format!("unknown field `{}`, no fields are allowed here", key.name)
                } else {
                    let expected = allowed.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ");
                    format!("unknown field `{}`, expected one of {expected}", key.name)
                };
                ctx.error(key.pos, &field(path, &key.name), message);
            }
        }
        Some(Fields { pos: node.pos, path: path.to_owned(), entries })
    }

    /// The value of an optional field; an explicit null counts as absent.
    fn get(&self, name: &str) -> Option<(&'a Node, String)> {
        self.entries
            .iter()
            .find(|(key, value)| key.name == name && !matches!(value.value, Value::Null))
            .map(|(_, value)| (value, field(&self.path, name)))
    }

    /// The value of a required field, reporting it at the mapping when it is missing.
    fn required(&self, ctx: &mut Ctx<'_>, name: &str) -> Option<(&'a Node, String)> {
        let found = self.get(name);
        if found.is_none() {
            ctx.error(self.pos, &self.path, format!("missing required field `{name}`"));
        }
        found
    }
}

fn string<'a>(ctx: &mut Ctx<'_>, node: &'a Node, path: &str) -> Option<&'a str> {
    match &node.value {
        Value::Scalar(text) => Some(text),
        _ => {
            ctx.error(node.pos, path, format!("expected a string, found {}", node.kind()));
            None
        }
    }
}

fn sequence<'a>(ctx: &mut Ctx<'_>, node: &'a Node, path: &str) -> Option<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Some(items),
        _ => {
            ctx.error(node.pos, path, format!("expected a sequence, found {}", node.kind()));
            None
        }
    }
}

/// An unsigned integer within `range`, with the range in the error message.
fn integer(ctx: &mut Ctx<'_>, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
    let text = string(ctx, node, path)?;
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            ctx.error(node.pos, path, format!("must be an integer from {min} to {max}"));
            None
        }
    }
}

/// A duration in whole seconds: `90`, `90s`, `5m` or `1h`, from `min` to `max` seconds.
fn duration_secs(ctx: &mut Ctx<'_>, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
    let text = string(ctx, node, path)?;
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        _ => None,
    };
    match (number.parse::<u64>().ok(), scale) {
        (Some(n), Some(scale)) if (min..=max).contains(&n.saturating_mul(scale)) => Some(n * scale),
        _ => {
            ctx.error(node.pos, path, format!("must be a duration from {min}s to {max}s, such as `30s`, `5m` or `1h`"));
            None
        }
    }
}

fn boolean(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<bool> {
    match string(ctx, node, path)? {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => {
            ctx.error(node.pos, path, "expected `true` or `false`");
            None
        }
    }
}

fn string_list(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Vec<String>> {
    let items = sequence(ctx, node, path)?;
    let strings: Vec<_> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| string(ctx, item, &index(path, i)).map(str::to_owned))
        .collect();
    (strings.len() == items.len()).then_some(strings)
}

/// Whether `name` is a DNS label: 1-63 characters of `[a-z0-9-]`, not starting or ending with `-`.
pub(crate) fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is a lowercase DNS name: dot-separated DNS labels, at most 253 characters.
pub(crate) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

fn dns_label(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let name = string(ctx, node, path)?;
    if is_dns_label(name) {
        Some(name.to_owned())
    } else {
        ctx.error(node.pos, path, "must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'");
        None
    }
}

/// An absolute path with no `..` component (which would let a mount or working directory escape).
fn absolute_path(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<String> {
    let text = string(ctx, node, path)?;
    if text.starts_with('/') && !text.contains('\0') && !text.split('/').any(|c| c == "..") {
        Some(text.to_owned())
    } else {
        ctx.error(node.pos, path, "must be an absolute path without `..` components");
        None
    }
}

/// Decodes and validates the whole document.
pub(crate) fn manifest(root: &Node, file: &Path) -> Result<Manifest, Vec<ManifestError>> {
    let mut ctx = Ctx { file, errors: Vec::new() };
    let decoded = decode_manifest(&mut ctx, root);
    match decoded {
        Some(manifest) if ctx.errors.is_empty() => Ok(manifest),
        _ => {
            if ctx.errors.is_empty() {
                // Every path that yields `None` reports an error; this keeps the contract if one forgets.
                ctx.error(root.pos, "", "invalid manifest");
            }
            ctx.errors.sort_by_key(|e| e.location().map(|l| (l.line, l.column)));
            Err(ctx.errors)
        }
    }
}

fn decode_manifest(ctx: &mut Ctx<'_>, root: &Node) -> Option<Manifest> {
    let fields = Fields::new(ctx, root, "", &["name", "containers", "volumes", "replicas", "restartPolicy"])?;
    let name = fields.required(ctx, "name").and_then(|(node, path)| dns_label(ctx, node, &path));
    let mut pod = Pod::default();
    let volumes = match fields.get("volumes") {
        Some((node, path)) => volumes(ctx, &mut pod, node, &path),
        None => Some(Vec::new()),
    };
    let containers = fields.required(ctx, "containers").and_then(|(node, path)| containers(ctx, &mut pod, node, &path));
    let replicas = match fields.get("replicas") {
        Some((node, path)) => replicas(ctx, node, &path),
        None => Some(Replicas::default()),
    };
    let restart_policy = match fields.get("restartPolicy") {
        Some((node, path)) => restart_policy(ctx, node, &path),
        None => Some(RestartPolicy::default()),
    };
    if let (Some(Replicas { max, .. }), Some(volumes), Some((node, _))) = (&replicas, &volumes, fields.get("replicas"))
        && *max > 1
    {
        // Each replica is a pod instance of its own: a filesystem volume would be a separate,
        // diverging copy per replica, which is never what a publisher sharing data means.
        let at = match &node.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == "max").map_or(node.pos, |(_, v)| v.pos),
            _ => node.pos,
        };
        for volume in volumes.iter().filter(|v| matches!(v.source, VolumeSource::Filesystem { .. })) {
            ctx.error(
                at,
                "replicas.max",
                format!(
                    "{max} replicas cannot share the filesystem volume `{}`: each replica would write its own copy; \
                     use max: 1, or an emptyDir for per-replica scratch space",
                    volume.name
                ),
            );
        }
    }
    Some(Manifest {
        name: name?,
        containers: containers?,
        volumes: volumes?,
        replicas: replicas?,
        restart_policy: restart_policy?,
    })
}

/// `Always`, `OnFailure` or `Never`, spelled as Kubernetes does (case matters there too).
fn restart_policy(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<RestartPolicy> {
    match string(ctx, node, path)? {
        "Always" => Some(RestartPolicy::Always),
        "OnFailure" => Some(RestartPolicy::OnFailure),
        "Never" => Some(RestartPolicy::Never),
        other => {
            ctx.error(
                node.pos,
                path,
                format!("unknown restart policy `{other}`, expected `Always`, `OnFailure` or `Never`"),
            );
            None
        }
    }
}

fn replicas(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Replicas> {
    let fields = Fields::new(ctx, node, path, &["min", "max", "idleTimeout", "targetConcurrency"])?;
    let max_limit = u64::from(MAX_REPLICAS);
    let min = fields.required(ctx, "min").and_then(|(node, path)| integer(ctx, node, &path, 0, max_limit));
    let max = fields.required(ctx, "max").and_then(|(node, path)| integer(ctx, node, &path, 1, max_limit));
    let idle_timeout_secs = match fields.get("idleTimeout") {
        Some((node, path)) => duration_secs(ctx, node, &path, 1, MAX_IDLE_TIMEOUT_SECS).map(Some),
        None => Some(None),
    };
    let target_concurrency = match fields.get("targetConcurrency") {
        Some((node, path)) => integer(ctx, node, &path, 1, 10_000).map(|n| u32::try_from(n).ok()),
        None => Some(None),
    };
    let (min, max) = (u32::try_from(min?).ok()?, u32::try_from(max?).ok()?);
    if min > max {
        ctx.error(node.pos, path, format!("min ({min}) must not exceed max ({max})"));
        return None;
    }
    Some(Replicas { min, max, idle_timeout_secs: idle_timeout_secs?, target_concurrency: target_concurrency? })
}

fn volumes(ctx: &mut Ctx<'_>, pod: &mut Pod, node: &Node, path: &str) -> Option<Vec<Volume>> {
    let items = sequence(ctx, node, path)?;
    let mut volumes = Vec::new();
    let mut first_seen: HashMap<String, String> = HashMap::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let Some(fields) = Fields::new(ctx, item, &path, &["name", "emptyDir", "filesystem", "secret"]) else {
            ok = false;
            continue;
        };
        let name = fields.required(ctx, "name").and_then(|(node, name_path)| {
            let name = dns_label(ctx, node, &name_path)?;
            if let Some(first) = first_seen.get(&name) {
                ctx.error(node.pos, &name_path, format!("duplicate volume name `{name}` (first used by {first})"));
                return None;
            }
            first_seen.insert(name.clone(), path.clone());
            pod.volumes.push(name.clone());
            Some(name)
        });
        let source = volume_source(ctx, &fields, item, &path);
        match (name, source) {
            (Some(name), Some(source)) => volumes.push(Volume { name, source }),
            _ => ok = false,
        }
    }
    ok.then_some(volumes)
}

fn volume_source(ctx: &mut Ctx<'_>, fields: &Fields<'_>, item: &Node, path: &str) -> Option<VolumeSource> {
    // `emptyDir: {}` and a bare `emptyDir:` both mean an empty directory, so presence is by key.
    let present: Vec<&str> = ["emptyDir", "filesystem", "secret"]
        .into_iter()
        .filter(|name| fields.entries.iter().any(|(key, _)| key.name == *name))
        .collect();
    let [kind] = present.as_slice() else {
        ctx.error(item.pos, path, "must have exactly one of `emptyDir`, `filesystem` or `secret`");
        return None;
    };
    // Looked up directly rather than through `get`, because there a null value counts as absent.
    let (_, node) = fields.entries.iter().find(|(key, _)| key.name == *kind)?;
    let path = field(path, kind);
    match *kind {
        "emptyDir" if matches!(node.value, Value::Null) => Some(VolumeSource::EmptyDir { size_bytes: None }),
        "emptyDir" => {
            let fields = Fields::new(ctx, node, &path, &["size"])?;
            let size_bytes = match fields.get("size") {
                None => None,
                Some((node, path)) => Some(quantity(ctx, node, &path, parse_bytes)?),
            };
            Some(VolumeSource::EmptyDir { size_bytes })
        }
        "filesystem" => {
            let fields = Fields::new(ctx, node, &path, &["size"])?;
            let (node, path) = fields.required(ctx, "size")?;
            let size_bytes = quantity(ctx, node, &path, parse_bytes)?;
            Some(VolumeSource::Filesystem { size_bytes })
        }
        _ => {
            let fields = Fields::new(ctx, node, &path, &["file"])?;
            let (node, path) = fields.required(ctx, "file")?;
            let file = string(ctx, node, &path)?;
            if file.is_empty() || file.contains('\0') {
                ctx.error(node.pos, &path, "must be a file path");
                return None;
            }
            Some(VolumeSource::Secret { file: PathBuf::from(file) })
        }
    }
}

/// A positive quantity parsed by `parse`.
fn quantity<E: std::fmt::Display>(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    parse: fn(&str) -> Result<u64, E>,
) -> Option<u64> {
    let text = string(ctx, node, path)?;
    match parse(text) {
        Ok(0) => {
            ctx.error(node.pos, path, "must be greater than zero");
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            ctx.error(node.pos, path, e.to_string());
            None
        }
    }
}

fn containers(ctx: &mut Ctx<'_>, pod: &mut Pod, node: &Node, path: &str) -> Option<Vec<Container>> {
    let items = sequence(ctx, node, path)?;
    if items.is_empty() || items.len() > MAX_CONTAINERS {
        ctx.error(node.pos, path, format!("must have 1 to {MAX_CONTAINERS} containers"));
        return None;
    }
    let mut first_seen: HashMap<String, String> = HashMap::new();
    let mut containers = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        if let Some(container) = container(ctx, pod, &mut first_seen, item, &path) {
            containers.push(container);
        }
    }
    (containers.len() == items.len()).then_some(containers)
}

fn container(
    ctx: &mut Ctx<'_>,
    pod: &mut Pod,
    first_seen: &mut HashMap<String, String>,
    node: &Node,
    path: &str,
) -> Option<Container> {
    let allowed = ["name", "image", "command", "args", "env", "workingDir", "ports", "resources", "volumeMounts"];
    let fields = Fields::new(ctx, node, path, &allowed)?;
    let name = fields.required(ctx, "name").and_then(|(node, name_path)| {
        let name = dns_label(ctx, node, &name_path)?;
        if let Some(first) = first_seen.get(&name) {
            ctx.error(node.pos, &name_path, format!("duplicate container name `{name}` (first used by {first})"));
            return None;
        }
        first_seen.insert(name.clone(), path.to_owned());
        Some(name)
    });
    let image = fields.required(ctx, "image").and_then(|(node, path)| image(ctx, node, &path));
    let command = optional(ctx, &fields, "command", string_list);
    let args = optional(ctx, &fields, "args", string_list);
    let env = optional(ctx, &fields, "env", env);
    let working_dir = optional(ctx, &fields, "workingDir", absolute_path);
    let ports = match fields.get("ports") {
        Some((node, path)) => ports(ctx, pod, node, &path),
        None => Some(Vec::new()),
    };
    let resources = fields.required(ctx, "resources").and_then(|(node, path)| resources(ctx, node, &path));
    let volume_mounts = match fields.get("volumeMounts") {
        Some((node, path)) => volume_mounts(ctx, pod, node, &path),
        None => Some(Vec::new()),
    };
    Some(Container {
        name: name?,
        image: image?,
        command: command?,
        args: args?,
        env: env?.unwrap_or_default(),
        working_dir: working_dir?,
        ports: ports?,
        resources: resources?,
        volume_mounts: volume_mounts?,
    })
}

/// Decodes an optional field: `Some(None)` when absent, `None` when present but invalid.
fn optional<T>(
    ctx: &mut Ctx<'_>,
    fields: &Fields<'_>,
    name: &str,
    decode: fn(&mut Ctx<'_>, &Node, &str) -> Option<T>,
) -> Option<Option<T>> {
    match fields.get(name) {
        Some((node, path)) => decode(ctx, node, &path).map(Some),
        None => Some(None),
    }
}

fn env(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
    let Value::Map(entries) = &node.value else {
        ctx.error(node.pos, path, format!("expected a mapping, found {}", node.kind()));
        return None;
    };
    let mut env = BTreeMap::new();
    let mut ok = true;
    for (key, value) in entries {
        let var_path = field(path, &key.name);
        let valid_name = key
            .name
            .chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
        if key.name.is_empty() || !valid_name {
            ctx.error(key.pos, &var_path, "environment variable names must match [A-Za-z_][A-Za-z0-9_]*");
            ok = false;
        }
        // `KEY:` with no value is an empty string, as in a shell.
        let value = match &value.value {
            Value::Null => Some(""),
            _ => string(ctx, value, &var_path),
        };
        match value {
            Some(value) => {
                env.insert(key.name.clone(), value.to_owned());
            }
            None => ok = false,
        }
    }
    ok.then_some(env)
}

fn image(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Image> {
    let reference = string(ctx, node, path)?;
    match classify_image(reference) {
        Some(kind) => Some(Image { reference: reference.to_owned(), kind }),
        None => {
            ctx.error(
                node.pos,
                path,
                "must be a local path starting with `./`, `../` or `/`, or a registry reference like \
                 `registry.example.com/app:1.0`",
            );
            None
        }
    }
}

/// Classifies an image reference, or returns `None` when it is neither a local path nor a
/// well-formed registry reference (`[host[:port]/]path[:tag][@algorithm:hex]`).
pub(crate) fn classify_image(reference: &str) -> Option<ImageKind> {
    if reference.chars().any(char::is_control) {
        return None;
    }
    if reference.starts_with("./") || reference.starts_with("../") || reference.starts_with('/') {
        return Some(ImageKind::LocalPath);
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let (algorithm, hex) = digest.split_once(':')?;
        let algorithm_ok =
            !algorithm.is_empty() && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let hex_ok = hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !algorithm_ok || !hex_ok {
            return None;
        }
    }
    // A tag is the part after the last ':' when no '/' follows it (otherwise the ':' is a host's port).
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        let tag_ok = (1..=128).contains(&tag.len())
            && !tag.starts_with(['.', '-'])
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return None;
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components.first().copied().unwrap_or_default();
    if components.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
        let (host, port) = first.split_once(':').unwrap_or((first, ""));
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        let port_ok = !first.contains(':') || port.parse::<u16>().is_ok();
        if !host_ok || !port_ok {
            return None;
        }
        components.remove(0);
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    components.iter().all(|c| component_ok(c)).then_some(ImageKind::Registry)
}

fn ports(ctx: &mut Ctx<'_>, pod: &mut Pod, node: &Node, path: &str) -> Option<Vec<Port>> {
    let items = sequence(ctx, node, path)?;
    let ports: Vec<Port> =
        items.iter().enumerate().filter_map(|(i, item)| port(ctx, pod, item, &index(path, i))).collect();
    (ports.len() == items.len()).then_some(ports)
}

fn port(ctx: &mut Ctx<'_>, pod: &mut Pod, node: &Node, path: &str) -> Option<Port> {
    let fields = Fields::new(ctx, node, path, &["containerPort", "protocol", "hostname"])?;
    let container_port = fields.required(ctx, "containerPort").and_then(|(node, port_path)| {
        let port = integer(ctx, node, &port_path, 1, 65535).and_then(|n| u16::try_from(n).ok())?;
        if let Some(first) = pod.ports.get(&port) {
            ctx.error(node.pos, &port_path, format!("port {port} is already used by {first}"));
            return None;
        }
        pod.ports.insert(port, path.to_owned());
        Some(port)
    });
    let protocol = match fields.get("protocol") {
        None => Some(Protocol::Http),
        Some((node, path)) => match string(ctx, node, &path) {
            Some("http") => Some(Protocol::Http),
            Some("tcp") => Some(Protocol::Tcp),
            Some(_) => {
                ctx.error(node.pos, &path, "must be `http` or `tcp`");
                None
            }
            None => None,
        },
    };
    let hostname = match fields.get("hostname") {
        None => Some(None),
        Some((node, hostname_path)) => {
            let hostname = string(ctx, node, &hostname_path);
            match hostname {
                Some(_) if protocol == Some(Protocol::Tcp) => {
                    ctx.error(node.pos, &hostname_path, "only http ports can have a hostname");
                    None
                }
                Some(name) if !is_dns_name(name) => {
                    ctx.error(node.pos, &hostname_path, "must be a lowercase DNS name like `hello.example.com`");
                    None
                }
                Some(name) => {
                    if let Some(first) = pod.hostnames.get(name) {
                        ctx.error(node.pos, &hostname_path, format!("hostname `{name}` is already used by {first}"));
                        None
                    } else {
                        pod.hostnames.insert(name.to_owned(), path.to_owned());
                        Some(Some(name.to_owned()))
                    }
                }
                None => None,
            }
        }
    };
    Some(Port { container_port: container_port?, protocol: protocol?, hostname: hostname? })
}

fn resources(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Resources> {
    let fields = Fields::new(ctx, node, path, &["cpu", "memory", "gpu", "pids"])?;
    let cpu_millis = fields.required(ctx, "cpu").and_then(|(node, path)| quantity(ctx, node, &path, parse_cpu_millis));
    let memory_bytes = fields.required(ctx, "memory").and_then(|(node, path)| quantity(ctx, node, &path, parse_bytes));
    let gpu = match fields.get("gpu") {
        None => Some(0),
        Some((node, path)) => integer(ctx, node, &path, 0, u64::from(u32::MAX)).and_then(|n| u32::try_from(n).ok()),
    };
    let pids = match fields.get("pids") {
        None => Some(None),
        Some((node, path)) => {
            integer(ctx, node, &path, 1, u64::from(crate::MAX_PIDS)).and_then(|n| u32::try_from(n).ok()).map(Some)
        }
    };
    Some(Resources { cpu_millis: cpu_millis?, memory_bytes: memory_bytes?, gpu: gpu?, pids: pids? })
}

fn volume_mounts(ctx: &mut Ctx<'_>, pod: &Pod, node: &Node, path: &str) -> Option<Vec<VolumeMount>> {
    let items = sequence(ctx, node, path)?;
    let mut mount_paths: HashMap<String, String> = HashMap::new();
    let mut mounts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = index(path, i);
        let Some(fields) = Fields::new(ctx, item, &path, &["name", "mountPath", "readOnly"]) else { continue };
        let name = fields.required(ctx, "name").and_then(|(node, name_path)| {
            let name = string(ctx, node, &name_path)?;
            if !pod.volumes.iter().any(|v| v == name) {
                ctx.error(node.pos, &name_path, format!("no volume named `{name}` in `volumes`"));
                return None;
            }
            Some(name.to_owned())
        });
        let mount_path = fields.required(ctx, "mountPath").and_then(|(node, mount_path)| {
            let dir = absolute_path(ctx, node, &mount_path)?;
            if let Some(reserved) = crate::reserved_mount_path(&dir) {
                ctx.error(
                    node.pos,
                    &mount_path,
                    format!("`{dir}` is at or under `{reserved}`: volumes cannot be mounted over /proc, /sys or /dev"),
                );
                return None;
            }
            if let Some(first) = mount_paths.get(&dir) {
                ctx.error(node.pos, &mount_path, format!("`{dir}` is already mounted by {first}"));
                return None;
            }
            mount_paths.insert(dir.clone(), path.clone());
            Some(dir)
        });
        let read_only = match fields.get("readOnly") {
            None => Some(false),
            Some((node, path)) => boolean(ctx, node, &path),
        };
        if let (Some(name), Some(mount_path), Some(read_only)) = (name, mount_path, read_only) {
            mounts.push(VolumeMount { name, mount_path, read_only });
        }
    }
    (mounts.len() == items.len()).then_some(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns() {
        assert!(is_dns_label("a"));
        assert!(is_dns_label("hello-2"));
        assert!(is_dns_label(&"a".repeat(63)));
        for bad in ["", "-a", "a-", "Hello", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_name("hello.example.com"));
        assert!(is_dns_name("localhost"));
        for bad in ["", "a..b", ".a", "a.", "Hello.com", "a b.com"] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn images() {
        for local in ["./image", "../images/app.tar", "/abs/image", "./"] {
            assert_eq!(classify_image(local), Some(ImageKind::LocalPath), "{local}");
        }
        for remote in [
            "busybox",
            "busybox:1.36",
            "library/busybox:latest",
            "registry.example.com/app:1.0",
            "localhost:5000/app",
            "localhost/app",
            "ghcr.io/org/my_app-x/sub.part:v1.2-rc_3",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(classify_image(remote), Some(ImageKind::Registry), "{remote}");
        }
        for bad in [
            "",
            "Busybox",
            "app:",
            "app:-x",
            "a b",
            "registry.example.com:99999/app",
            "reg..com/app",
            "app@sha256:xyz",
            "app//x",
            "-app",
        ] {
            assert_eq!(classify_image(bad), None, "{bad:?}");
        }
    }
}
