//! The host's identity: an ed25519 libp2p keypair, stored in a file in libp2p's protobuf
//! encoding and readable by its owner only, since it is the provider's (or publisher's)
//! network identity.

use std::{
    fs,
    io::{ErrorKind, Write},
    path::Path,
};

use libp2p::identity::Keypair;

use crate::NetError;

/// A fresh ed25519 keypair.
pub fn generate_keypair() -> Keypair {
    Keypair::generate_ed25519()
}

/// Reads a keypair saved by [`save_keypair`].
pub fn load_keypair(path: &Path) -> Result<Keypair, NetError> {
    let bytes = fs::read(path).map_err(|source| NetError::KeyIo { path: path.to_owned(), source })?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| NetError::KeyDecode { path: path.to_owned(), reason: e.to_string() })
}

/// Writes `keypair` to `path` (created or replaced) with mode 0600.
pub fn save_keypair(path: &Path, keypair: &Keypair) -> Result<(), NetError> {
    let io_err = |source| NetError::KeyIo { path: path.to_owned(), source };
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| NetError::KeyDecode { path: path.to_owned(), reason: e.to_string() })?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let mut file = options.open(path).map_err(io_err)?;
        // `mode` applies only when the file is created; tighten a pre-existing one too.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        file.write_all(&bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
    #[cfg(not(unix))]
    {
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(&bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

/// Loads the keypair at `path`, or generates and saves one if the file does not exist.
pub fn load_or_generate_keypair(path: &Path) -> Result<Keypair, NetError> {
    match fs::metadata(path) {
        Ok(_) => load_keypair(path),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let keypair = generate_keypair();
            save_keypair(path, &keypair)?;
            Ok(keypair)
        }
        Err(source) => Err(NetError::KeyIo { path: path.to_owned(), source }),
    }
}
