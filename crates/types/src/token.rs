//! Bearer tokens: the text of an admin token, and the digest stored in place of any token
//! (admin and join tokens are kept only as this digest).

use sha2::Digest;

/// What every admin token starts with.
pub const ADMIN_TOKEN_PREFIX: &str = "ibt_";

/// An admin token's text made from 32 random bytes.
pub fn admin_token(secret: [u8; 32]) -> String {
    format!("{ADMIN_TOKEN_PREFIX}{}", hex::encode(secret))
}

/// The hex SHA-256 stored instead of a token; whitespace around it is not part of it.
pub fn token_digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_digests() {
        let t = admin_token([7; 32]);
        assert!(t.starts_with(ADMIN_TOKEN_PREFIX) && t.len() == 68, "{t}");
        assert_ne!(t, admin_token([8; 32]));
        assert_eq!(token_digest(&t), token_digest(&format!(" {t}\n")));
        assert_ne!(token_digest(&t), token_digest(&admin_token([8; 32])));
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
