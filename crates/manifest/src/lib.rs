//! The pod manifest: a Kubernetes-like YAML description of a pod (containers, ports, resources,
//! volumes, secrets, replicas, restart policy), parsed and validated with errors that name file, line, column
//! and field path.
//!
//! [`parse`] turns YAML text into a typed, validated [`Manifest`]; [`load`] reads a file first.
//! All problems are reported at once ([`ManifestErrors`]), each formatted like
//! `hello.yaml:7:23: containers[0].ports[1].containerPort: must be an integer from 1 to 65535`.
//!
//! Parsing is bounded: manifests larger than [`MAX_MANIFEST_BYTES`] (1 MiB) or nesting deeper
//! than [`MAX_DEPTH`] (64) levels are refused, and YAML aliases are not supported. Unknown
//! fields are errors everywhere. Local paths (images, secret files) are kept relative to the
//! manifest's directory and are not checked for existence here; the CLI does that.

mod decode;
mod error;
mod model;
pub mod quantity;
mod tree;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use error::{Location, ManifestError, ManifestErrors};
pub use model::{
    Container, Image, ImageKind, Manifest, Port, Protocol, Replicas, Resources, RestartPolicy, Volume, VolumeMount,
    VolumeSource,
};
pub use tree::MAX_DEPTH;

/// The largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most containers a pod may have.
pub const MAX_CONTAINERS: usize = 16;
/// The most replicas a pod may ask for.
pub const MAX_REPLICAS: u32 = 16;

/// The longest `replicas.idleTimeout` a manifest may ask for: a week.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// The largest `resources.pids` accepted: the kernel's own ceiling on pids (`PID_MAX_LIMIT`).
pub const MAX_PIDS: u32 = 1 << 22;
/// Container paths no volume may be mounted at or under: the kernel's file systems the runtime
/// mounts there itself (a volume over `/dev` would have device nodes made in it).
pub const RESERVED_MOUNT_PATHS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// The [`RESERVED_MOUNT_PATHS`] entry `path` (an absolute path) is at or under, if any.
/// Components are compared, so `//proc/`, `/proc/./x` and `/dev` all match, `/devices` does not.
pub fn reserved_mount_path(path: &str) -> Option<&'static str> {
    let first = Path::new(path).components().find_map(|c| match c {
        std::path::Component::Normal(name) => Some(name),
        _ => None,
    })?;
    RESERVED_MOUNT_PATHS.into_iter().find(|reserved| Path::new(reserved).file_name() == Some(first))
}

/// A commented sample manifest: a tiny busybox httpd "hello" pod. It parses.
pub const SAMPLE: &str = r#"# A Trusted Pods manifest: one pod, deployed together to one provider.
# Unknown fields are errors; relative paths are relative to this file's directory.
name: hello                  # DNS label: a-z, 0-9 and '-'
containers:                  # 1 to 16 containers
  - name: web
    # An OCI image layout directory or docker-archive tarball next to this file,
    # or a registry reference such as registry.example.com/app:1.0.
    image: ./image
    command: ["/bin/busybox", "httpd"]
    args: ["-f", "-vv", "-p", "8080", "-h", "/www"]   # foreground, log requests, serve /www
    ports:
      - containerPort: 8080
        protocol: http       # http (the default) or tcp
        # hostname: hello.example.com   # optional, http only
    resources:
      cpu: 100m              # millicores: 100m = 0.1 core
      memory: 64Mi           # bytes; Ki Mi Gi Ti or K M G T suffixes
# volumes:                   # optional: emptyDir: {size: 1Gi} (size optional), filesystem: {size: 1Gi}, secret: {file: ./secret.txt}
#   - name: data
#     emptyDir: {}
replicas:
  min: 1
  max: 1
"#;

/// Parses and validates a manifest. `file` is only used in error messages.
pub fn parse(source: &str, file: &Path) -> Result<Manifest, ManifestErrors> {
    if source.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { file: file.to_path_buf(), limit: MAX_MANIFEST_BYTES }.into());
    }
    let syntax = |pos: tree::Pos, message: String| ManifestError::Syntax {
        location: Location { file: file.to_path_buf(), line: pos.line, column: pos.column },
        message,
    };
    let root = match tree::build(source) {
        Ok(Some(root)) => root,
        Ok(None) => return Err(syntax(tree::Pos::START, "the manifest is empty".to_owned()).into()),
        Err(e) => return Err(syntax(e.pos, e.message).into()),
    };
    decode::manifest(&root, file).map_err(ManifestErrors)
}

/// Reads and parses a manifest file, refusing files larger than [`MAX_MANIFEST_BYTES`] without
/// reading them whole.
pub fn load(path: &Path) -> Result<Manifest, ManifestErrors> {
    let read_error = |source| ManifestError::Read { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(read_error)?;
    let mut source = String::new();
    // One byte past the limit is enough to know the file is too large.
    file.take(MAX_MANIFEST_BYTES as u64 + 1).read_to_string(&mut source).map_err(read_error)?;
    parse(&source, path)
}
