//! Sealed packet files (Property 30): a packet exported to a file for
//! sneakernet exchange is encrypted and authenticated for the one node pair
//! it travels between, so a lost USB stick leaks nothing and an altered,
//! truncated or misaddressed file is refused.
//!
//! Owns: the file format (documented in docs/protocol.md, "Packet files")
//! and its sealing and opening. The export/import commands call [`seal`] and
//! [`open`]; they decide what the plaintext is (the gzip envelope) and which
//! key a header is opened with.
//!
//! The key material is the SHA-256 hash of the client node's token, which
//! both ends know without any further exchange: the client holds the token,
//! the master stores only its hash. Each file gets a fresh random salt, and
//! the AEAD key is HKDF-SHA256(salt, token hash, info = format, sender,
//! recipient, packet number), so a key is never reused across files and a
//! file can only be opened as the pair and packet it names.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     7  magic "HSPKTF\0"
//!      7     1  format version (1)
//!      8    16  sender node id (UUID bytes)
//!     24    16  recipient node id
//!     40     8  packet_no (i64)
//!     48     8  created_at (i64 microseconds since the Unix epoch, UTC)
//!     56    32  salt (random)
//!     88    12  nonce (random)
//!    100     …  ChaCha20-Poly1305 ciphertext of the packet, then its 16-byte tag
//! ```
//!
//! Bytes 0..100 are in clear (an importer must read whom the file is for
//! before it can pick a key) and are the AEAD's associated data: changing
//! any of them makes the file fail to open.
//!
//! Must never: panic on any input, or return plaintext that did not
//! authenticate.

use chrono::{DateTime, Utc};
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

/// The file's first bytes.
pub const MAGIC: &[u8; 7] = b"HSPKTF\0";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 7 + 1 + 16 + 16 + 8 + 8;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Everything before the ciphertext: the associated data.
const PREFIX_LEN: usize = HEADER_LEN + SALT_LEN + NONCE_LEN;
/// The shortest possible file (an empty packet).
pub const MIN_LEN: usize = PREFIX_LEN + TAG_LEN;
const INFO_LABEL: &[u8] = b"hubsync packet file v1";

/// Whom a sealed file is for: in clear, but authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    pub sender: Uuid,
    pub recipient: Uuid,
    pub packet_no: i64,
    /// Stored with microsecond precision.
    pub created_at: DateTime<Utc>,
}

/// Why a file could not be sealed or opened. Never contains key material
/// or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    #[error(
        "the file is {len} bytes, shorter than any hubsync packet file ({MIN_LEN}); it was cut short — copy it again from the exporting node"
    )]
    Truncated { len: usize },
    #[error(
        "not a hubsync packet file (wrong magic bytes); check that you picked the file `hubsync export` wrote"
    )]
    NotAPacketFile,
    #[error(
        "packet file format version {found} is not supported (this hubsync reads version {FORMAT_VERSION}); import it with the hubsync version that exported it, or upgrade"
    )]
    UnsupportedVersion { found: u8 },
    #[error(
        "the packet file header is corrupt: {what}; copy the file again from the exporting node"
    )]
    CorruptHeader { what: &'static str },
    #[error(
        "the packet file is from node {sender} to node {recipient}, a pair this node has no key for; import it on its recipient, which must know the sender"
    )]
    UnknownPair { sender: Uuid, recipient: Uuid },
    #[error(
        "the key for this node pair is not a SHA-256 token hash (64 hex digits); the node's stored token hash is damaged — rotate its token"
    )]
    BadKey,
    #[error(
        "the packet file does not authenticate: it was altered or truncated, or sealed with another token (rotated since, or for another node); nothing was imported — export it again"
    )]
    Authentication,
    #[error("the system random generator or cipher failed; try again")]
    Crypto,
}

/// Encrypts and authenticates `plain` for the node pair of `header`, with
/// the SHA-256 hash (hex) of the client node's token as key material.
pub fn seal(plain: &[u8], header: &FileHeader, token_hash_hex: &str) -> Result<Vec<u8>, SealError> {
    let ikm = decode_key(token_hash_hex)?;
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| SealError::Crypto)?;
    rng.fill(&mut nonce).map_err(|_| SealError::Crypto)?;

    let mut out = Vec::with_capacity(PREFIX_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(header.sender.as_bytes());
    out.extend_from_slice(header.recipient.as_bytes());
    out.extend_from_slice(&header.packet_no.to_be_bytes());
    out.extend_from_slice(&header.created_at.timestamp_micros().to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    debug_assert_eq!(out.len(), PREFIX_LEN);

    let key = derive_key(&ikm, &salt, header)?;
    let mut body = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&out[..PREFIX_LEN]),
        &mut body,
    )
    .map_err(|_| SealError::Crypto)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the clear header of a sealed file, without authenticating it:
/// what an importer shows or checks before it looks for a key. Trust
/// nothing in it until [`open`] succeeds.
pub fn peek_header(bytes: &[u8]) -> Result<FileHeader, SealError> {
    if bytes.len() < MIN_LEN {
        // A short file that is not ours at all says so first.
        if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
            return Err(SealError::NotAPacketFile);
        }
        return Err(SealError::Truncated { len: bytes.len() });
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(SealError::NotAPacketFile);
    }
    let version = bytes[7];
    if version != FORMAT_VERSION {
        return Err(SealError::UnsupportedVersion { found: version });
    }
    let uuid_at = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes[at..at + 16]);
        Uuid::from_bytes(b)
    };
    let i64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        i64::from_be_bytes(b)
    };
    let created_at =
        DateTime::<Utc>::from_timestamp_micros(i64_at(48)).ok_or(SealError::CorruptHeader {
            what: "the creation time is out of range",
        })?;
    Ok(FileHeader {
        sender: uuid_at(8),
        recipient: uuid_at(24),
        packet_no: i64_at(40),
        created_at,
    })
}

/// Checks and decrypts a sealed file. `key_for` gets the file's (not yet
/// authenticated) header and returns the token hash (hex) of that node
/// pair's token, or `None` when this node has no such pair — in particular
/// when the recipient is not this node. Returns the authenticated header
/// and the plaintext.
pub fn open(
    bytes: &[u8],
    key_for: impl Fn(&FileHeader) -> Option<String>,
) -> Result<(FileHeader, Vec<u8>), SealError> {
    let header = peek_header(bytes)?;
    let key_hex = key_for(&header).ok_or(SealError::UnknownPair {
        sender: header.sender,
        recipient: header.recipient,
    })?;
    let ikm = decode_key(&key_hex)?;
    let (prefix, sealed) = bytes.split_at(PREFIX_LEN);
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&prefix[HEADER_LEN..HEADER_LEN + SALT_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&prefix[HEADER_LEN + SALT_LEN..]);
    let key = derive_key(&ikm, &salt, &header)?;
    let mut body = sealed.to_vec();
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(prefix),
            &mut body,
        )
        .map_err(|_| SealError::Authentication)?
        .len();
    body.truncate(plain_len);
    Ok((header, body))
}

fn decode_key(hex: &str) -> Result<[u8; 32], SealError> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return Err(SealError::BadKey);
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16).ok_or(SealError::BadKey);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Ok(out)
}

fn derive_key(
    ikm: &[u8; 32],
    salt: &[u8; SALT_LEN],
    header: &FileHeader,
) -> Result<LessSafeKey, SealError> {
    let packet_no = header.packet_no.to_be_bytes();
    let info: [&[u8]; 4] = [
        INFO_LABEL,
        header.sender.as_bytes(),
        header.recipient.as_bytes(),
        &packet_no,
    ];
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let okm = prk
        .expand(&info, &CHACHA20_POLY1305)
        .map_err(|_| SealError::Crypto)?;
    let unbound: UnboundKey = okm.into();
    Ok(aead::LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> FileHeader {
        FileHeader {
            sender: Uuid::from_u128(0x1111),
            recipient: Uuid::from_u128(0x2222),
            packet_no: 42,
            created_at: DateTime::<Utc>::from_timestamp_micros(1_764_000_000_123_456)
                .unwrap_or_default(),
        }
    }

    fn key() -> String {
        crate::auth::token_hash("hs1.example-token")
    }

    #[test]
    fn a_sealed_file_opens_with_its_key_and_hides_the_packet() {
        let plain = b"{\"header\": {\"packet_no\": 42}, \"secret\": \"payroll\"}";
        let sealed = seal(plain, &header(), &key()).unwrap();
        assert_eq!(sealed.len(), MIN_LEN + plain.len());
        assert!(
            !sealed.windows(7).any(|w| w == b"payroll"),
            "no plaintext in the file"
        );
        let (h, opened) = open(&sealed, |_| Some(key())).unwrap();
        assert_eq!(h, header());
        assert_eq!(opened, plain);
        // Sealing twice gives different files (fresh salt and nonce).
        assert_ne!(seal(plain, &header(), &key()).unwrap(), sealed);
        assert_eq!(peek_header(&sealed).unwrap(), header());
    }

    #[test]
    fn wrong_key_wrong_pair_and_unknown_pair_are_refused() {
        let sealed = seal(b"packet", &header(), &key()).unwrap();
        let other = crate::auth::token_hash("hs1.rotated");
        assert_eq!(
            open(&sealed, |_| Some(other.clone())).unwrap_err(),
            SealError::Authentication
        );
        assert_eq!(
            open(&sealed, |_| None).unwrap_err(),
            SealError::UnknownPair {
                sender: header().sender,
                recipient: header().recipient
            }
        );
        assert_eq!(
            open(&sealed, |_| Some("zz".into())).unwrap_err(),
            SealError::BadKey
        );
        // Readdressed to another recipient: the header is authenticated.
        let mut readdressed = sealed.clone();
        readdressed[24..40].copy_from_slice(Uuid::from_u128(0x3333).as_bytes());
        assert_eq!(
            open(&readdressed, |_| Some(key())).unwrap_err(),
            SealError::Authentication
        );
        assert_eq!(
            seal(b"x", &header(), "not hex").unwrap_err(),
            SealError::BadKey
        );
    }

    #[test]
    fn short_foreign_and_future_files_say_what_they_are() {
        let sealed = seal(b"", &header(), &key()).unwrap();
        assert_eq!(sealed.len(), MIN_LEN);
        assert_eq!(open(&sealed, |_| Some(key())).unwrap().1, b"");
        assert!(matches!(
            open(&sealed[..10], |_| Some(key())),
            Err(SealError::Truncated { len: 10 })
        ));
        assert_eq!(
            open(b"{\"header\": 1, \"body\": [] and so on, long enough to not be short at all, really, truly, yes indeed it is}", |_| Some(key())).unwrap_err(),
            SealError::NotAPacketFile
        );
        let mut future = sealed.clone();
        future[7] = 2;
        assert_eq!(
            open(&future, |_| Some(key())).unwrap_err(),
            SealError::UnsupportedVersion { found: 2 }
        );
        let mut bad_time = sealed;
        bad_time[48..56].copy_from_slice(&i64::MAX.to_be_bytes());
        assert!(matches!(
            open(&bad_time, |_| Some(key())),
            Err(SealError::CorruptHeader { .. })
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        // Feature: sync-system, Property 30: Data encryption during transmission — an exported packet file round-trips for its node pair, and any single-byte change or truncation is refused, never opened and never a panic.
        #[test]
        fn any_change_or_truncation_is_refused(
            plain in proptest::collection::vec(any::<u8>(), 0..512),
            packet_no in any::<i64>(),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let h = FileHeader { packet_no, ..header() };
            let sealed = seal(&plain, &h, &key()).unwrap();
            let (opened_header, opened) = open(&sealed, |_| Some(key())).unwrap();
            prop_assert_eq!(opened_header, h);
            prop_assert_eq!(&opened, &plain);

            let mut altered = sealed.clone();
            let i = at.index(altered.len());
            altered[i] ^= flip;
            prop_assert!(open(&altered, |_| Some(key())).is_err(), "byte {} changed", i);

            let len = cut.index(sealed.len());
            prop_assert!(open(&sealed[..len], |_| Some(key())).is_err(), "cut at {}", len);
        }
    }
}
