//! On-disk blob layout.
//!
//! ```text
//! header (128 bytes): magic "IBBLOB01" | chunk_size u32 BE | flags u8 | [key_id 8 | wrap_nonce 12 | wrapped_key 48] | zero padding
//! flags: 0 plain, 1 data key wrapped by a node master key, 2 data key wrapped by a customer key (SSE-C)
//! chunk 0: plaintext (chunk_size bytes) | CRC32C (4 bytes BE)        -- not encrypted
//!          ciphertext (chunk_size bytes) | AES-GCM tag (16 bytes)     -- encrypted
//! chunk 1 ...
//! last chunk: the remaining 1..=chunk_size bytes, same trailer
//! ```
//! Chunk `i` starts at `128 + i * (chunk_size + trailer)`, so a range read seeks directly.

pub const HEADER_LEN: usize = 128;
pub const TAG_LEN: usize = 16;
pub const CRC_LEN: usize = 4;
const MAGIC: &[u8; 8] = b"IBBLOB01";
const FLAG_ENCRYPTED: u8 = 1;
const FLAG_CUSTOMER_KEY: u8 = 2;

/// The per-blob data key, wrapped by a master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoMaterial {
    pub key_id: [u8; 8],
    pub wrap_nonce: [u8; 12],
    pub wrapped_key: [u8; 48],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub chunk_size: u32,
    pub crypto: Option<CryptoMaterial>,
    /// The data key is wrapped by a key the client supplies with each request (SSE-C).
    pub customer_key: bool,
}

impl Header {
    pub fn new(chunk_size: u32, crypto: Option<CryptoMaterial>, customer_key: bool) -> Self {
        Self {
            chunk_size,
            crypto,
            customer_key,
        }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        match &self.crypto {
            Some(c) => {
                out.push(if self.customer_key {
                    FLAG_CUSTOMER_KEY
                } else {
                    FLAG_ENCRYPTED
                });
                out.extend_from_slice(&c.key_id);
                out.extend_from_slice(&c.wrap_nonce);
                out.extend_from_slice(&c.wrapped_key);
            }
            None => out.push(0),
        }
        out.resize(start + HEADER_LEN, 0);
    }

    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        if buf.len() < HEADER_LEN || &buf[..8] != MAGIC {
            return Err("bad blob header magic".into());
        }
        let chunk_size = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if chunk_size == 0 {
            return Err("zero chunk size in blob header".into());
        }
        let customer_key = buf[12] == FLAG_CUSTOMER_KEY;
        let crypto = match buf[12] {
            0 => None,
            FLAG_ENCRYPTED | FLAG_CUSTOMER_KEY => {
                let mut c = CryptoMaterial {
                    key_id: [0; 8],
                    wrap_nonce: [0; 12],
                    wrapped_key: [0; 48],
                };
                c.key_id.copy_from_slice(&buf[13..21]);
                c.wrap_nonce.copy_from_slice(&buf[21..33]);
                c.wrapped_key.copy_from_slice(&buf[33..81]);
                Some(c)
            }
            f => return Err(format!("unknown blob header flags {f}")),
        };
        Ok(Self {
            chunk_size,
            crypto,
            customer_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for crypto in [
            None,
            Some(CryptoMaterial {
                key_id: [1; 8],
                wrap_nonce: [2; 12],
                wrapped_key: [3; 48],
            }),
        ] {
            for customer in [false, true] {
                let h = Header::new(65536, crypto.clone(), customer && crypto.is_some());
                let mut buf = Vec::new();
                h.encode_into(&mut buf);
                assert_eq!(buf.len(), HEADER_LEN);
                assert_eq!(Header::decode(&buf), Ok(h));
            }
        }
        assert!(Header::decode(&[0u8; HEADER_LEN]).is_err());
    }
}
