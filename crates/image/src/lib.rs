//! OCI image layouts for pods: building them deterministically, reading them with every blob
//! verified, and unpacking their layers safely into a root filesystem.
//!
//! A provider receives images from publishers it does not trust, so reading and unpacking treat
//! the layout as hostile input: every blob is checked against its descriptor's sha256 digest and
//! size before it is used (layers while they stream), JSON documents are bounded to
//! [`MAX_JSON_BYTES`], and layer entries may not escape the root filesystem (no absolute paths,
//! no `..`, no writing through symlinks).
//!
//! - [`build_layout`] / [`write_layout`] write an OCI image layout (`oci-layout`, `index.json`,
//!   `blobs/sha256/…`) with fixed timestamps and owners, so the same input gives the same digests.
//! - [`read_layout`] parses `index.json` → manifest → config into an [`Image`].
//! - [`encrypt_image`] encrypts an image's blobs for delivery on the publisher's machine;
//!   [`open_encrypted`] opens such an image on a provider, from the blobs and their keys.
//! - [`import_docker_archive`] converts a `docker save` tarball into an image layout in a cache
//!   directory, checking its layers against the config's diff ids.
//! - [`pull_image`] pulls an image from a registry (private ones too: [`RegistryAuth`],
//!   [`docker_config_auth`]) into an image layout in a cache directory, every blob verified.
//! - [`unpack`] applies an image's layers, in order, to a directory; [`unpack_shifted`] keeps
//!   their owners, moved into a container's range of host ids ([`IdShift`]).
//! - [`hello`] builds the `examples/hello` busybox httpd image.

mod build;
mod cache;
mod digest;
mod docker;
mod encrypted;
mod error;
pub mod hello;
mod read;
mod registry;
mod unpack;

pub use build::{ContainerConfig, RootfsFile, build_layout, layer_tar, write_layout, write_layout_uncompressed};
pub use digest::Digest;
pub use docker::import_docker_archive;
pub use encrypted::{EncryptedBlob, EncryptedImage, EncryptedLayer, encrypt_image, encrypt_image_with, open_encrypted};
pub use error::ImageError;
pub use read::{Blob, Image, Layer, MAX_JSON_BYTES, read_layout};
pub use registry::{MAX_LAYER_BYTES, RegistryAuth, docker_config_auth, pull_image};
pub use unpack::{IdShift, UnpackReport, check_layers, unpack, unpack_shifted};

/// Re-exported so callers can inspect [`Image`] without depending on `oci-spec` themselves.
pub use oci_spec;
