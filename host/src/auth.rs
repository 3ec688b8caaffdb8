//! Node tokens: 256-bit random secrets, shown once, stored only as a
//! SHA-256 hash. A token's hash is its lookup key, so the secret itself is
//! never compared with stored data.

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use uuid::Uuid;

/// Prefix that makes a hubsync token recognisable in secret scanners.
const TOKEN_PREFIX: &str = "hs1.";

/// A fresh token: `hs1.<master node id>.<256 random bits, hex>`. The master's
/// id is not secret; carrying it lets `hubsync init client` address packets
/// to the right master without contacting it (offline set-up).
pub fn new_token(master_id: Uuid) -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}.{}",
        master_id.simple(),
        hex(&bytes)
    ))
}

/// The master node id a token was issued by.
pub fn master_id_of(token: &str) -> Option<Uuid> {
    let rest = token.trim().strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    (secret.len() == 64).then_some(())?;
    Uuid::try_parse(id).ok()
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_long_and_hash_stably() {
        let master = Uuid::new_v4();
        let a = new_token(master).unwrap();
        let b = new_token(master).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 32 + 1 + 64);
        assert_eq!(master_id_of(&a), Some(master));
        assert_eq!(master_id_of("hs1.nonsense"), None);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
        assert!(!token_hash(&a).contains(&a[a.len() - 64..]));
    }
}
