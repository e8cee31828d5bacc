//! Linux native file encryption (fscrypt, v2 policies: AES-256-XTS for contents, AES-256-CTS for
//! names) for [`crate::VolumeKind::Filesystem`] volumes, so what a pod writes to one is ciphertext
//! on the host's disk.
//!
//! Each volume's key is derived from the runtime's [`VolumeKey`], the pod id and the volume name,
//! so no key is ever written anywhere: after a provider restart or a host reboot the same key is
//! derived again and given to the kernel when the volume is mounted. The key lives in the file
//! system's keyring (kernel memory) while it is mounted. The provider derives its [`VolumeKey`]
//! from its enclave key, so volumes are exactly as readable as the enclave key is.
//!
//! The kernel interface is three ioctls on the mounted file system (see the kernel's
//! `Documentation/filesystems/fscrypt.rst` and `include/uapi/linux/fscrypt.h`), which nix has no
//! wrappers for; the structs below mirror the UAPI ones.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::RuntimeError;

/// The secret every volume key is derived from. `Debug` never shows it.
#[derive(Clone)]
pub struct VolumeKey(Zeroizing<[u8; 32]>);

impl VolumeKey {
    /// A key from 32 secret bytes; the same bytes give the same volume keys.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// A fresh random key: volumes made with it are unreadable once it is gone, so this is for
    /// runtimes that only remove pods, and tests.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        #[allow(clippy::expect_used)]
        getrandom::fill(bytes.as_mut_slice()).expect("the OS random number generator failed");
        Self(bytes)
    }

    /// The 32-byte key container `container` of pod `pod` encrypts its log records under
    /// (see [`crate::logs`]): derived like the volumes' keys, with another label.
    pub(crate) fn log_key(&self, pod: &str, container: &str) -> Zeroizing<[u8; 32]> {
        let mut info = b"tpod-log-v1\0".to_vec();
        info.extend_from_slice(pod.as_bytes());
        info.push(0);
        info.extend_from_slice(container.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, self.0.as_slice()).expand(&info, key.as_mut_slice());
        key
    }

    /// The 64-byte fscrypt master key of volume `volume` of pod `pod`.
    fn master_key(&self, pod: &str, volume: &str) -> Zeroizing<[u8; RAW_KEY_BYTES]> {
        let mut info = b"tpod-volume-v1\0".to_vec();
        info.extend_from_slice(pod.as_bytes());
        info.push(0);
        info.extend_from_slice(volume.as_bytes());
        let mut key = Zeroizing::new([0u8; RAW_KEY_BYTES]);
        // 64 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = Hkdf::<Sha256>::new(None, self.0.as_slice()).expand(&info, key.as_mut_slice());
        key
    }
}

impl std::fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKey(..)")
    }
}

/// AES-256-XTS takes a 64-byte key.
const RAW_KEY_BYTES: usize = 64;
const IDENTIFIER_BYTES: usize = 16;
const POLICY_V2: u8 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
/// Pad file names to 32 bytes, so their lengths do not show either.
const FLAGS_PAD_32: u8 = 0x03;
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;

#[repr(C)]
struct KeySpecifier {
    kind: u32,
    reserved: u32,
    identifier: [u8; 32],
}

/// `struct fscrypt_add_key_arg` with its flexible `raw` array sized for our keys.
#[repr(C)]
struct AddKeyArg {
    key_spec: KeySpecifier,
    raw_size: u32,
    key_id: u32,
    flags: u32,
    reserved: [u32; 7],
    raw: [u8; RAW_KEY_BYTES],
}

#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct PolicyV2 {
    version: u8,
    contents_mode: u8,
    filenames_mode: u8,
    flags: u8,
    log2_data_unit_size: u8,
    reserved: [u8; 3],
    identifier: [u8; IDENTIFIER_BYTES],
}

/// `struct fscrypt_get_policy_ex_arg`; the union is as large as its v2 member.
#[repr(C)]
struct GetPolicyExArg {
    policy_size: u64,
    policy: PolicyV2,
}

// The request numbers, as the UAPI header's _IOR/_IOWR give them (the size in SET_POLICY's is
// that of the v1 struct, as the kernel defines it).
nix::ioctl_write_ptr_bad!(set_policy, 0x800C_6613, PolicyV2); // FS_IOC_SET_ENCRYPTION_POLICY
nix::ioctl_readwrite_bad!(get_policy_ex, 0xC009_6616, GetPolicyExArg); // FS_IOC_GET_ENCRYPTION_POLICY_EX
nix::ioctl_readwrite_bad!(add_key, 0xC050_6617, AddKeyArg); // FS_IOC_ADD_ENCRYPTION_KEY

fn open(path: &Path) -> Result<File, RuntimeError> {
    File::open(path).map_err(RuntimeError::io("opening for fscrypt", path))
}

fn failed<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> RuntimeError + 'a {
    move |errno| {
        let hint = match errno {
            nix::Error::EOPNOTSUPP => " (the file system was not made with `-O encrypt`, or the kernel lacks fscrypt)",
            _ => "",
        };
        RuntimeError::Encryption { path: path.to_path_buf(), message: format!("{what}: {errno}{hint}") }
    }
}

/// Gives the kernel the key of volume `volume` of pod `pod` for the file system mounted at
/// `mount_point`, and returns its identifier. Adding a key the file system already has is
/// harmless.
pub(crate) fn add_volume_key(
    key: &VolumeKey,
    pod: &str,
    volume: &str,
    mount_point: &Path,
) -> Result<[u8; IDENTIFIER_BYTES], RuntimeError> {
    let master = key.master_key(pod, volume);
    let mut arg = Box::new(AddKeyArg {
        key_spec: KeySpecifier { kind: KEY_SPEC_TYPE_IDENTIFIER, reserved: 0, identifier: [0; 32] },
        raw_size: RAW_KEY_BYTES as u32,
        key_id: 0,
        flags: 0,
        reserved: [0; 7],
        raw: *master,
    });
    let dir = open(mount_point)?;
    // SAFETY: `arg` is a valid, exclusively borrowed `fscrypt_add_key_arg` whose `raw` holds
    // `raw_size` bytes; the kernel reads it and writes the identifier into `key_spec`.
    let result = unsafe { add_key(dir.as_raw_fd(), &mut *arg) };
    let mut identifier = [0u8; IDENTIFIER_BYTES];
    identifier.copy_from_slice(&arg.key_spec.identifier[..IDENTIFIER_BYTES]);
    // The key's copy in `arg` is wiped whatever the outcome.
    zeroize::Zeroize::zeroize(&mut arg.raw);
    result.map_err(failed("adding the volume key", mount_point))?;
    Ok(identifier)
}

/// Encrypts the empty directory `dir` with the key `identifier`: all that is written below it
/// is encrypted.
pub(crate) fn encrypt_dir(dir: &Path, identifier: [u8; IDENTIFIER_BYTES]) -> Result<(), RuntimeError> {
    let policy = policy(identifier);
    let file = open(dir)?;
    // SAFETY: `policy` is a valid `fscrypt_policy_v2` the kernel only reads.
    unsafe { set_policy(file.as_raw_fd(), &policy) }.map_err(failed("encrypting the volume directory", dir))?;
    Ok(())
}

/// Checks that `dir` is encrypted with the key `identifier` under our policy, so that a volume
/// image replaced with one that is not encrypted is never written to in clear.
pub(crate) fn check_dir(dir: &Path, identifier: [u8; IDENTIFIER_BYTES]) -> Result<(), RuntimeError> {
    let file = open(dir)?;
    let mut arg = GetPolicyExArg { policy_size: size_of::<PolicyV2>() as u64, policy: PolicyV2::default() };
    // SAFETY: `arg` is a valid `fscrypt_get_policy_ex_arg` with room for a v2 policy, as
    // `policy_size` says; the kernel writes at most that.
    unsafe { get_policy_ex(file.as_raw_fd(), &mut arg) }.map_err(|errno| match errno {
        nix::Error::ENODATA => RuntimeError::Encryption { path: dir.to_path_buf(), message: "not encrypted".into() },
        other => failed("reading the volume directory's encryption", dir)(other),
    })?;
    if arg.policy != policy(identifier) {
        return Err(RuntimeError::Encryption {
            path: dir.to_path_buf(),
            message: "encrypted under another key or policy".into(),
        });
    }
    Ok(())
}

fn policy(identifier: [u8; IDENTIFIER_BYTES]) -> PolicyV2 {
    PolicyV2 {
        version: POLICY_V2,
        contents_mode: MODE_AES_256_XTS,
        filenames_mode: MODE_AES_256_CTS,
        flags: FLAGS_PAD_32,
        log2_data_unit_size: 0,
        reserved: [0; 3],
        identifier,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        // The sizes the request numbers and the UAPI header use.
        assert_eq!(size_of::<KeySpecifier>(), 40);
        assert_eq!(size_of::<AddKeyArg>() - RAW_KEY_BYTES, 80);
        assert_eq!(size_of::<PolicyV2>(), 24);
        assert_eq!(size_of::<GetPolicyExArg>(), 32);
    }

    #[test]
    fn volume_keys_differ_by_pod_volume_and_root() {
        let root = VolumeKey::new(Zeroizing::new([7; 32]));
        let key = root.master_key("pod", "data");
        assert_eq!(*key, *root.master_key("pod", "data"));
        assert_ne!(*key, *root.master_key("pod", "data2"));
        assert_ne!(*key, *root.master_key("pod2", "data"));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(*root.master_key("a", "bc"), *root.master_key("ab", "c"));
        assert_ne!(*key, *VolumeKey::new(Zeroizing::new([8; 32])).master_key("pod", "data"));
        assert_eq!(format!("{root:?}"), "VolumeKey(..)");
    }
}
