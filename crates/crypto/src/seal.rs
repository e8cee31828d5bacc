//! Sealing small secrets (image keys, pod secrets, containers' command, args and environment) to
//! an attested enclave's key, authenticated to the publisher who sealed them.
//!
//! This is HPKE (RFC 9180) in auth mode with one fixed suite: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and ChaCha20Poly1305. Auth mode mixes the sender's static key into the key
//! exchange, so a message opens only with the recipient's secret key *and* the sender's expected
//! public key: an enclave knows a sealed image key came from the pod's publisher. What the message
//! is for ([`Purpose`]) goes into HPKE's `info`, and where it belongs (the caller's `aad`, such as
//! pod id and container name) into the AEAD's associated data, so a sealed value cannot be
//! replayed in another role or another pod.
//!
//! Each message is sealed on its own (single-shot HPKE, a fresh ephemeral key every time); a
//! [`Sealed`] is the encapsulated key and the ciphertext, both carried as is on the wire.

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, HpkeError, Kem as _, OpModeR, OpModeS, Serializable as _};
use zeroize::Zeroizing;

type Kem = X25519HkdfSha256;
type HpkeSecretKey = <Kem as hpke::Kem>::PrivateKey;
type HpkePublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Length of an X25519 key, secret or public, and of an encapsulated key.
const KEY_BYTES: usize = 32;
/// Length of the ChaCha20Poly1305 tag that every ciphertext carries.
const TAG_BYTES: usize = 16;

/// The largest plaintext [`seal`] accepts; [`open`] refuses ciphertexts longer than this plus
/// the tag before doing any work, since they arrive from the network.
pub const MAX_SEALED_PLAINTEXT: usize = 1 << 20;

/// Why sealing or opening failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A key was not 32 bytes.
    #[error("an X25519 key is 32 bytes, got {0}")]
    KeyLength(usize),
    /// The encapsulated key of a sealed message is not an X25519 public key.
    #[error("malformed encapsulated key: expected 32 bytes, got {0}")]
    EncappedKey(usize),
    /// The plaintext is over [`MAX_SEALED_PLAINTEXT`].
    #[error("plaintext of {0} bytes is larger than the limit of {MAX_SEALED_PLAINTEXT} bytes")]
    PlaintextTooLarge(usize),
    /// The ciphertext is shorter than a tag or longer than the largest plaintext plus a tag.
    #[error("ciphertext of {0} bytes is not between {TAG_BYTES} and {max} bytes", max = MAX_SEALED_PLAINTEXT + TAG_BYTES)]
    CiphertextLength(usize),
    /// The recipient's public key cannot be used: it is a low-order X25519 point, so the key
    /// exchange would give the all-zero secret.
    #[error("the recipient's public key is not usable (a low-order X25519 point)")]
    RecipientKey,
    /// HPKE refused to seal for a reason that the checks above should rule out.
    #[error("sealing failed: {0}")]
    Seal(String),
    /// The message did not open. HPKE cannot tell why: every cause gives the same failed tag
    /// check (or a failed key exchange with a low-order key).
    #[error(
        "cannot open: not sealed to this enclave's key, or not by the expected sender, or for another \
         purpose or context, or modified (HPKE cannot tell which)"
    )]
    Open,
}

/// What a sealed message is for. It goes into HPKE's `info`, so a message sealed for one purpose
/// never opens as another (a sealed image key is not a secret, a process description not an
/// image key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The key of an encrypted container image.
    Image,
    /// The files of a pod's secret volume.
    Secret,
    /// How a container's process starts: its command, arguments and environment.
    Process,
}

impl Purpose {
    /// HPKE `info`. Versioned so a later format cannot be confused with this one.
    fn info(self) -> &'static [u8] {
        match self {
            Self::Image => b"tpod/v1 image",
            Self::Secret => b"tpod/v1 secret",
            Self::Process => b"tpod/v1 process",
        }
    }
}

/// An X25519 secret key (zeroized on drop; `Debug` prints only the public key).
pub struct SecretKey {
    // hpke's key wraps x25519-dalek's StaticSecret, which zeroizes itself on drop.
    secret: HpkeSecretKey,
    public: HpkePublicKey,
}

impl SecretKey {
    /// A new key from the operating system's randomness.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails (as hpke does).
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair();
        Self { secret, public }
    }

    /// The key that RFC 9180's `DeriveKeyPair` gives for `ikm`: the same `ikm` always gives the
    /// same key. Used to derive a publisher's sealing key from its Ethereum key bytes, so the
    /// publisher has one secret to keep. `ikm` should hold at least 32 bytes of entropy.
    pub fn derive(ikm: &[u8]) -> Self {
        let (secret, public) = Kem::derive_keypair(ikm);
        Self { secret, public }
    }

    /// The key of 32 bytes. X25519 clamps secret keys, so [`SecretKey::to_bytes`] gives back
    /// `bytes` with the clamping bits set; both stand for the same key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != KEY_BYTES {
            return Err(SealError::KeyLength(bytes.len()));
        }
        let secret = HpkeSecretKey::from_bytes(bytes).map_err(|_| SealError::KeyLength(bytes.len()))?;
        let public = Kem::sk_to_pk(&secret);
        Ok(Self { secret, public })
    }

    /// The 32 bytes of the (clamped) key.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut bytes = Zeroizing::new([0; KEY_BYTES]);
        // Written straight into the zeroizing buffer, so no copy of the key is left behind.
        self.secret.write_exact(bytes.as_mut_slice());
        bytes
    }

    /// A 32-byte secret for `purpose`, derived from this key (HKDF-SHA256, the key as input
    /// keying material, `purpose` as info): secrets the key's owner needs again later (volume
    /// keys of the enclave) are kept nowhere, and are exactly as safe as this key.
    pub fn derive_secret(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0; 32]);
        // 32 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let _ = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"tpod-derive-secret-v1"), self.to_bytes().as_slice())
            .expand(purpose, out.as_mut_slice());
        out
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0; KEY_BYTES];
        self.public.write_exact(&mut bytes);
        PublicKey(bytes)
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("public", &self.public()).finish_non_exhaustive()
    }
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key of 32 bytes. Any 32 bytes are accepted here; a low-order point fails later, in
    /// [`seal`] or [`open`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let bytes = bytes.try_into().map_err(|_| SealError::KeyLength(bytes.len()))?;
        Ok(Self(bytes))
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_hpke(self) -> HpkePublicKey {
        // Every 32 bytes are an X25519 public key to hpke; this cannot fail.
        HpkePublicKey::from_bytes(&self.0).unwrap_or_else(|_| unreachable!("32-byte X25519 public key refused"))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// One HPKE ciphertext: the encapsulated key and the AEAD ciphertext (both sent as is; see the
/// wire proto's `Sealed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// The sender's ephemeral public key (32 bytes).
    pub enc: Vec<u8>,
    /// The ChaCha20Poly1305 ciphertext: as long as the plaintext, plus a 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The AAD that binds a pod's sealed parts to their place: the 32-byte pod id, then the name of
/// the container (image keys, process) or volume (secret), so nothing sealed for one place opens
/// in another.
pub fn sealing_aad(pod_id: &[u8; 32], name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + name.len());
    aad.extend_from_slice(pod_id);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Seals `plaintext` from `sender` (HPKE auth mode) to `recipient`, for `purpose` and bound to
/// `aad` (see [`sealing_aad`]).
pub fn seal(
    sender: &SecretKey,
    recipient: &PublicKey,
    purpose: Purpose,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed, SealError> {
    if plaintext.len() > MAX_SEALED_PLAINTEXT {
        return Err(SealError::PlaintextTooLarge(plaintext.len()));
    }
    let mode = OpModeS::<Kem>::Auth((sender.secret.clone(), sender.public.clone()));
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &recipient.to_hpke(),
        purpose.info(),
        plaintext,
        aad,
    )
    .map_err(|error| match error {
        // Both key exchanges of auth-mode encapsulation are with the recipient's key.
        HpkeError::EncapError => SealError::RecipientKey,
        other => SealError::Seal(other.to_string()),
    })?;
    Ok(Sealed { enc: enc.to_bytes().to_vec(), ciphertext })
}

/// Opens a message sealed by [`seal`]. Fails unless it was sealed to `recipient` by the holder of
/// `sender`'s secret key, for `purpose` and `aad`, and not modified since.
pub fn open(
    recipient: &SecretKey,
    sender: &PublicKey,
    purpose: Purpose,
    aad: &[u8],
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    // Sizes first: these come from the network, and hpke should only see well-formed input.
    if sealed.enc.len() != KEY_BYTES {
        return Err(SealError::EncappedKey(sealed.enc.len()));
    }
    let len = sealed.ciphertext.len();
    if !(TAG_BYTES..=MAX_SEALED_PLAINTEXT + TAG_BYTES).contains(&len) {
        return Err(SealError::CiphertextLength(len));
    }
    let enc = EncappedKey::from_bytes(&sealed.enc).map_err(|_| SealError::EncappedKey(sealed.enc.len()))?;
    let mode = OpModeR::<Kem>::Auth(sender.to_hpke());
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &mode,
        &recipient.secret,
        &enc,
        purpose.info(),
        &sealed.ciphertext,
        aad,
    )
    .map(Zeroizing::new)
    // A low-order enc or sender key (failed decapsulation) is as much "not for us" as a bad tag.
    .map_err(|_| SealError::Open)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    const AAD: &[u8] = b"pod 7 / container web";

    struct Parties {
        publisher: SecretKey,
        enclave: SecretKey,
    }

    fn parties() -> Parties {
        Parties { publisher: SecretKey::generate(), enclave: SecretKey::generate() }
    }

    #[test]
    fn round_trip() {
        let Parties { publisher, enclave } = parties();
        for plaintext in [&b""[..], b"k", &[7; 32], &vec![9; MAX_SEALED_PLAINTEXT]] {
            let sealed = seal(&publisher, &enclave.public(), Purpose::Image, AAD, plaintext).unwrap();
            assert_eq!(sealed.enc.len(), 32);
            assert_eq!(sealed.ciphertext.len(), plaintext.len() + TAG_BYTES);
            let opened = open(&enclave, &publisher.public(), Purpose::Image, AAD, &sealed).unwrap();
            assert_eq!(opened.as_slice(), plaintext);
        }
    }

    #[test]
    fn sealing_twice_gives_different_messages() {
        let Parties { publisher, enclave } = parties();
        let a = seal(&publisher, &enclave.public(), Purpose::Secret, AAD, b"same").unwrap();
        let b = seal(&publisher, &enclave.public(), Purpose::Secret, AAD, b"same").unwrap();
        assert_ne!(a.enc, b.enc);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn only_the_right_keys_purpose_and_aad_open() {
        let Parties { publisher, enclave } = parties();
        let other = SecretKey::generate();
        let sealed = seal(&publisher, &enclave.public(), Purpose::Image, AAD, b"image key").unwrap();
        let attempts = [
            ("wrong recipient", open(&other, &publisher.public(), Purpose::Image, AAD, &sealed)),
            ("wrong sender", open(&enclave, &other.public(), Purpose::Image, AAD, &sealed)),
            ("recipient as sender", open(&enclave, &enclave.public(), Purpose::Image, AAD, &sealed)),
            ("wrong purpose", open(&enclave, &publisher.public(), Purpose::Secret, AAD, &sealed)),
            ("wrong aad", open(&enclave, &publisher.public(), Purpose::Image, b"pod 8 / container web", &sealed)),
            ("no aad", open(&enclave, &publisher.public(), Purpose::Image, b"", &sealed)),
        ];
        for (what, result) in attempts {
            assert_eq!(result, Err(SealError::Open), "{what}");
        }
        // The right everything still opens it.
        assert!(open(&enclave, &publisher.public(), Purpose::Image, AAD, &sealed).is_ok());
    }

    #[test]
    fn a_sealed_process_opens_only_as_a_process_of_its_pod_and_container() {
        let Parties { publisher, enclave } = parties();
        let (pod, other_pod) = ([7; 32], [8; 32]);
        let aad = sealing_aad(&pod, "web");
        let sealed = seal(&publisher, &enclave.public(), Purpose::Process, &aad, b"env and args").unwrap();
        let open_ = |purpose, aad: &[u8]| open(&enclave, &publisher.public(), purpose, aad, &sealed);
        let attempts = [
            ("as an image key", open_(Purpose::Image, &aad)),
            ("as a secret", open_(Purpose::Secret, &aad)),
            ("for another pod", open_(Purpose::Process, &sealing_aad(&other_pod, "web"))),
            ("for another container", open_(Purpose::Process, &sealing_aad(&pod, "db"))),
            ("for a container named like a prefix", open_(Purpose::Process, &sealing_aad(&pod, "we"))),
        ];
        for (what, result) in attempts {
            assert_eq!(result, Err(SealError::Open), "{what}");
        }
        assert_eq!(open_(Purpose::Process, &aad).unwrap().as_slice(), b"env and args");
        // Nor does an image key open as a process.
        let image = seal(&publisher, &enclave.public(), Purpose::Image, &aad, b"image key").unwrap();
        assert_eq!(open(&enclave, &publisher.public(), Purpose::Process, &aad, &image), Err(SealError::Open));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let Parties { publisher, enclave } = parties();
        let sealed = seal(&publisher, &enclave.public(), Purpose::Secret, AAD, b"password").unwrap();
        let fields: [fn(&mut Sealed) -> &mut Vec<u8>; 2] = [|s| &mut s.enc, |s| &mut s.ciphertext];
        for field in fields {
            for index in 0..field(&mut sealed.clone()).len() {
                for bit in [0x01, 0x80] {
                    let mut modified = sealed.clone();
                    field(&mut modified)[index] ^= bit;
                    let result = open(&enclave, &publisher.public(), Purpose::Secret, AAD, &modified);
                    assert_eq!(result, Err(SealError::Open), "byte {index} bit {bit:#x} of {modified:?}");
                }
            }
        }
    }

    #[test]
    fn sizes_are_checked_before_opening() {
        let Parties { publisher, enclave } = parties();
        let sealed = seal(&publisher, &enclave.public(), Purpose::Secret, AAD, b"x").unwrap();
        let open_ = |sealed: &Sealed| open(&enclave, &publisher.public(), Purpose::Secret, AAD, sealed);

        let mut short_enc = sealed.clone();
        short_enc.enc.pop();
        assert_eq!(open_(&short_enc), Err(SealError::EncappedKey(31)));
        let mut long_enc = sealed.clone();
        long_enc.enc.push(0);
        assert_eq!(open_(&long_enc), Err(SealError::EncappedKey(33)));

        let mut no_tag = sealed.clone();
        no_tag.ciphertext.truncate(15);
        assert_eq!(open_(&no_tag), Err(SealError::CiphertextLength(15)));
        let mut huge = sealed.clone();
        huge.ciphertext = vec![0; MAX_SEALED_PLAINTEXT + TAG_BYTES + 1];
        assert_eq!(open_(&huge), Err(SealError::CiphertextLength(MAX_SEALED_PLAINTEXT + 17)));
        // Just a tag is the right size for an empty plaintext, and only fails authentication.
        let mut tag_only = sealed.clone();
        tag_only.ciphertext.truncate(16);
        assert_eq!(open_(&tag_only), Err(SealError::Open));
    }

    #[test]
    fn oversized_plaintext_is_refused() {
        let Parties { publisher, enclave } = parties();
        let plaintext = vec![0; MAX_SEALED_PLAINTEXT + 1];
        let result = seal(&publisher, &enclave.public(), Purpose::Image, AAD, &plaintext);
        assert_eq!(result, Err(SealError::PlaintextTooLarge(MAX_SEALED_PLAINTEXT + 1)));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let publisher = SecretKey::generate();
        // The all-zero point has order one: any key exchange with it gives the all-zero secret.
        let zero = PublicKey::from_bytes(&[0; 32]).unwrap();
        assert_eq!(seal(&publisher, &zero, Purpose::Image, AAD, b"k"), Err(SealError::RecipientKey));

        let enclave = SecretKey::generate();
        let sealed = Sealed { enc: vec![0; 32], ciphertext: vec![0; 17] };
        assert_eq!(open(&enclave, &publisher.public(), Purpose::Image, AAD, &sealed), Err(SealError::Open));
        let sealed = seal(&publisher, &enclave.public(), Purpose::Image, AAD, b"k").unwrap();
        assert_eq!(open(&enclave, &zero, Purpose::Image, AAD, &sealed), Err(SealError::Open));
    }

    #[test]
    fn derive_is_deterministic_and_depends_on_ikm() {
        let ikm = [0x42; 32];
        let a = SecretKey::derive(&ikm);
        let b = SecretKey::derive(&ikm);
        assert_eq!(*a.to_bytes(), *b.to_bytes());
        assert_eq!(a.public(), b.public());
        let mut other_ikm = ikm;
        other_ikm[31] ^= 1;
        let c = SecretKey::derive(&other_ikm);
        assert_ne!(*a.to_bytes(), *c.to_bytes());
        assert_ne!(a.public(), c.public());
        // The derived key is not the ikm itself.
        assert_ne!(*a.to_bytes(), ikm);
    }

    #[test]
    fn derived_secrets_depend_on_key_and_purpose() {
        let key = SecretKey::derive(&[0x42; 32]);
        let secret = key.derive_secret(b"volumes");
        assert_eq!(*secret, *SecretKey::from_bytes(key.to_bytes().as_slice()).unwrap().derive_secret(b"volumes"));
        assert_ne!(*secret, *key.derive_secret(b"volume"));
        assert_ne!(*secret, *SecretKey::derive(&[0x43; 32]).derive_secret(b"volumes"));
        assert_ne!(*secret, *key.to_bytes());
    }

    #[test]
    fn derive_matches_rfc_9180() {
        // RFC 9180 appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305,
        // base mode): ikmE and the pkEm it derives.
        let ikm = hex("909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b");
        let public = hex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a");
        assert_eq!(SecretKey::derive(&ikm).public().as_bytes().as_slice(), public);
    }

    #[test]
    fn keys_round_trip_through_bytes() {
        let key = SecretKey::generate();
        let again = SecretKey::from_bytes(key.to_bytes().as_slice()).unwrap();
        assert_eq!(*again.to_bytes(), *key.to_bytes());
        assert_eq!(again.public(), key.public());
        let public = PublicKey::from_bytes(key.public().as_bytes()).unwrap();
        assert_eq!(public, key.public());

        assert_eq!(SecretKey::from_bytes(&[1; 31]).unwrap_err(), SealError::KeyLength(31));
        assert_eq!(PublicKey::from_bytes(&[1; 33]).unwrap_err(), SealError::KeyLength(33));
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = SecretKey::from_bytes(&[0xab; 32]).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(&key.public().to_string()), "{debug}");
        assert!(!debug.contains("abab"), "{debug}");
        assert_eq!(format!("{:?}", PublicKey([0x0f; 32])), format!("PublicKey({})", "0f".repeat(32)));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Network input: `open` on arbitrary bytes returns an error, never panics.
        #[test]
        fn open_never_panics_on_arbitrary_input(
            enc in proptest::collection::vec(any::<u8>(), 0..40),
            ciphertext in proptest::collection::vec(any::<u8>(), 0..200),
            aad in proptest::collection::vec(any::<u8>(), 0..20),
            sender in any::<[u8; 32]>(),
        ) {
            let recipient = SecretKey::derive(b"proptest recipient key material!");
            let sender = PublicKey(sender);
            let result = open(&recipient, &sender, Purpose::Secret, &aad, &Sealed { enc, ciphertext });
            prop_assert!(result.is_err());
        }

        #[test]
        fn round_trip_of_arbitrary_messages(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let sender = SecretKey::derive(b"proptest sender key material....");
            let recipient = SecretKey::derive(b"proptest recipient key material!");
            let sealed = seal(&sender, &recipient.public(), Purpose::Secret, &aad, &plaintext).unwrap();
            let opened = open(&recipient, &sender.public(), Purpose::Secret, &aad, &sealed).unwrap();
            prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }
}
