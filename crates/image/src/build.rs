//! Writing OCI image layouts. Output is deterministic: tar entries have mtime 0 and uid/gid 0,
//! the gzip header has no timestamp, and JSON documents are written with sorted keys (oci-spec
//! serializes some maps from a `HashMap`, whose order changes from run to run).

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use flate2::{Compression, GzBuilder};
use oci_spec::image::{
    Arch, Config, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFs,
};
use serde_json::Value;

use crate::{Digest, ImageError};

/// One file to put into the image.
#[derive(Clone, Debug)]
pub struct RootfsFile {
    /// The file on the build machine.
    pub src: PathBuf,
    /// Where it goes in the image, e.g. `/bin/busybox`. Parent directories are created (0755).
    pub dest: String,
    /// Its permission bits in the image, e.g. `0o755`.
    pub mode: u32,
}

/// The runtime part of an image config.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    /// `Entrypoint`: the program and its first arguments.
    pub entrypoint: Vec<String>,
    /// `Cmd`: default arguments (or the command, without an entrypoint).
    pub cmd: Vec<String>,
    /// `Env`: `NAME=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `ExposedPorts`, e.g. `8080/tcp`.
    pub exposed_ports: Vec<String>,
}

/// Writes an image layout with one gzip layer holding `files` to `out_dir` (created if missing)
/// and returns the manifest digest.
pub fn build_layout(out_dir: &Path, files: &[RootfsFile], config: &ContainerConfig) -> Result<Digest, ImageError> {
    let layer = layer_tar(files)?;
    write_layout(out_dir, &[layer], config)
}

/// Writes an image layout to `out_dir` (created if missing) from uncompressed tar layers, lowest
/// first, gzipping each, and returns the manifest digest. Nothing in the tars is checked: this
/// is also how tests make hostile images.
pub fn write_layout(out_dir: &Path, layers: &[Vec<u8>], config: &ContainerConfig) -> Result<Digest, ImageError> {
    write_layout_with(out_dir, layers, config, true)
}

/// [`write_layout`] with the layers stored as they are (`application/vnd.oci.image.layer.v1.tar`,
/// as `docker save` and some registries have them), not gzipped: big incompressible layers are
/// written fast.
pub fn write_layout_uncompressed(
    out_dir: &Path,
    layers: &[Vec<u8>],
    config: &ContainerConfig,
) -> Result<Digest, ImageError> {
    write_layout_with(out_dir, layers, config, false)
}

fn write_layout_with(
    out_dir: &Path,
    layers: &[Vec<u8>],
    config: &ContainerConfig,
    compress: bool,
) -> Result<Digest, ImageError> {
    let blobs = out_dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(ImageError::io(&blobs))?;

    let mut layer_descriptors = Vec::with_capacity(layers.len());
    let mut diff_ids = Vec::with_capacity(layers.len());
    for tar in layers {
        diff_ids.push(Digest::of(tar).to_string());
        layer_descriptors.push(if compress {
            let gzip = gzip(tar).map_err(|e| ImageError::Build(format!("gzip: {e}")))?;
            write_blob(out_dir, MediaType::ImageLayerGzip, &gzip)?
        } else {
            write_blob(out_dir, MediaType::ImageLayer, tar)?
        });
    }

    let arch = host_arch();
    let mut runtime = Config::default();
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    runtime.set_entrypoint(some(&config.entrypoint));
    runtime.set_cmd(some(&config.cmd));
    runtime.set_env(some(&config.env));
    runtime.set_working_dir(config.working_dir.clone());
    runtime.set_exposed_ports(some(&config.exposed_ports));
    let mut rootfs = RootFs::default();
    rootfs.set_typ("layers".to_owned());
    rootfs.set_diff_ids(diff_ids);
    let image_config = ImageConfigurationBuilder::default()
        .architecture(arch.clone())
        .os(Os::Linux)
        .config(runtime)
        .rootfs(rootfs)
        .build()
        .map_err(spec_error)?;
    let config_descriptor = write_blob(out_dir, MediaType::ImageConfig, &canonical_json(&image_config)?)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_descriptor)
        .layers(layer_descriptors)
        .build()
        .map_err(spec_error)?;
    let manifest_json = canonical_json(&manifest)?;
    let manifest_digest = Digest::of(&manifest_json);
    let mut manifest_descriptor = write_blob(out_dir, MediaType::ImageManifest, &manifest_json)?;
    manifest_descriptor
        .set_platform(Some(PlatformBuilder::default().architecture(arch).os(Os::Linux).build().map_err(spec_error)?));
    crate::cache::write_index(out_dir, manifest_descriptor)?;
    Ok(manifest_digest)
}

/// The image-spec name of the architecture this program runs on.
pub(crate) fn host_arch() -> Arch {
    Arch::from(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    })
}

pub(crate) fn spec_error(e: oci_spec::OciSpecError) -> ImageError {
    ImageError::Build(e.to_string())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    fs::write(path, bytes).map_err(ImageError::io(path))
}

fn write_blob(out_dir: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, ImageError> {
    let digest = Digest::of(bytes);
    write_file(&digest.blob_path(out_dir), bytes)?;
    let oci_digest = oci_spec::image::Digest::from_str(digest.as_str()).map_err(spec_error)?;
    Ok(Descriptor::new(media_type, bytes.len() as u64, oci_digest))
}

/// Serializes with object keys sorted, whatever map type the value used.
pub(crate) fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ImageError> {
    fn sort(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sort).collect()),
            other => other,
        }
    }
    let json_error = |source| ImageError::Json { what: "build".to_owned(), source };
    let value = serde_json::to_value(value).map_err(json_error)?;
    serde_json::to_vec(&sort(value)).map_err(json_error)
}

fn gzip(bytes: &[u8]) -> io::Result<Vec<u8>> {
    // GzBuilder writes mtime 0 and no file name unless told otherwise.
    let mut encoder = GzBuilder::new().mtime(0).write(Vec::new(), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// `/bin/busybox` → `bin/busybox`, refusing anything that is not a plain absolute path.
fn image_path(dest: &str) -> Result<PathBuf, ImageError> {
    let bad = || ImageError::Build(format!("destination {dest:?} must be an absolute path without `.` or `..`"));
    let rest = dest.strip_prefix('/').ok_or_else(bad)?;
    let path = PathBuf::from(rest);
    if rest.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    Ok(path)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// An uncompressed tar layer holding `files` (with their parent directories, owned by root,
/// timestamps zeroed), for [`write_layout`].
pub fn layer_tar(files: &[RootfsFile]) -> Result<Vec<u8>, ImageError> {
    let paths = files.iter().map(|f| image_path(&f.dest)).collect::<Result<Vec<_>, _>>()?;
    let dirs: BTreeSet<&Path> =
        paths.iter().flat_map(|p| p.ancestors().skip(1)).filter(|p| !p.as_os_str().is_empty()).collect();
    let mut builder = tar::Builder::new(Vec::new());
    let tar_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    // BTreeSet order puts every directory before its children.
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut h, dir, io::empty()).map_err(tar_error(dir))?;
    }
    for (file, path) in files.iter().zip(&paths) {
        let data = fs::read(&file.src).map_err(ImageError::io(&file.src))?;
        let mut h = header(tar::EntryType::Regular, file.mode & 0o7777, data.len() as u64);
        builder.append_data(&mut h, path, data.as_slice()).map_err(tar_error(path))?;
    }
    builder.into_inner().map_err(tar_error(Path::new("layer")))
}
