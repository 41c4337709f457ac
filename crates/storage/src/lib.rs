//! Blob storage on the local file system: object bodies streamed into chunk files, each chunk
//! independently verified on read (CRC32C, or an AES-256-GCM tag when encryption at rest is
//! on), so a range read touches only the chunks it needs and a corrupted file gives an error,
//! never wrong bytes.
//!
//! Blob files are named by random ids, never by object keys, so no key can reach outside the
//! data directory. A blob is written to `tmp/`, fsynced, renamed into `blobs/` and its directory
//! fsynced; whether an object refers to it is decided by the metadata layer, not here.
//!
//! Depends only on `ironbucket-types`; knows nothing about buckets, keys or S3.

mod crypto;
mod format;
mod rewrap;

pub use crypto::{CustomerKey, EncryptionKey, KeyError, Keyring};
pub use rewrap::Rewrap;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

/// Errors of the blob layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("blob I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("blob {id} is corrupt: {why}")]
    Corrupt { id: String, why: String },
    #[error("blob {id} was encrypted with key {key_id}, which is not configured")]
    UnknownKey { id: String, key_id: String },
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob {0} is encrypted with a customer-provided key, which the request did not give")]
    CustomerKeyRequired(String),
    #[error("the customer-provided key does not open blob {0}")]
    CustomerKeyMismatch(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A stream of body bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Settings of the blob layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// fsync each blob and its directory before a write is acknowledged.
    pub fsync: bool,
    /// Plaintext bytes per independently verified chunk.
    pub chunk_size: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            fsync: true,
            chunk_size: 64 * 1024,
        }
    }
}

impl StorageConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(4096..=16 * 1024 * 1024).contains(&self.chunk_size) {
            return Err(format!(
                "storage chunk size {} must be between 4 KiB and 16 MiB",
                self.chunk_size
            ));
        }
        Ok(())
    }
}

/// Where a blob lives and how to read it back; stored in object metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub id: String,
    /// Plaintext size in bytes.
    pub size: u64,
}

/// The blob store rooted at a data directory.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    cfg: StorageConfig,
    keys: Option<Keyring>,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directories under `root` and clears temp files left
    /// by an interrupted run.
    pub fn open(root: &Path, cfg: StorageConfig, keys: Option<Keyring>) -> Result<Self> {
        std::fs::create_dir_all(root.join("blobs"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            for entry in std::fs::read_dir(&tmp)? {
                let entry = entry?;
                let _ = std::fs::remove_file(entry.path());
            }
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                cfg,
                keys,
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn encryption_enabled(&self) -> bool {
        self.inner.keys.is_some()
    }

    fn blob_path(&self, id: &str) -> PathBuf {
        let shard = id.get(..2).unwrap_or("00");
        self.inner.root.join("blobs").join(shard).join(id)
    }

    /// Starts a new blob in a file (any size).
    pub async fn create(&self) -> Result<BlobWriter> {
        self.create_with(None).await
    }

    /// Starts a new file blob, sealed with a customer-provided key (SSE-C) when given.
    pub async fn create_with(&self, customer: Option<&CustomerKey>) -> Result<BlobWriter> {
        // Fault injection (`FAILPOINTS=blob-create=return`, `failpoints` builds only): the file
        // cannot be made, as on a read-only file system.
        fail::fail_point!("blob-create", |_| Err(Error::Io(std::io::Error::from_raw_os_error(30))));
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp_path = self.inner.root.join("tmp").join(&id);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .await?
            .into_std()
            .await;
        self.writer(id, Some((file, tmp_path)), customer)
    }

    /// Starts a small blob kept in memory, to be stored by the caller (inline in metadata) in
    /// the same verified, optionally encrypted format. Its id starts with `i`.
    pub fn create_inline(&self) -> Result<BlobWriter> {
        self.create_inline_with(None)
    }

    /// [`BlobStore::create_inline`], sealed with a customer-provided key when given.
    pub fn create_inline_with(&self, customer: Option<&CustomerKey>) -> Result<BlobWriter> {
        self.writer(format!("i{}", uuid::Uuid::new_v4().simple()), None, customer)
    }

    /// Whether a blob id names an inline blob (see [`BlobStore::create_inline`]).
    pub fn is_inline(id: &str) -> bool {
        id.starts_with('i')
    }

    fn writer(
        &self,
        id: String,
        file: Option<(std::fs::File, PathBuf)>,
        customer: Option<&CustomerKey>,
    ) -> Result<BlobWriter> {
        let sealer = match (customer, &self.inner.keys) {
            (Some(ck), _) => Some(ck.new_blob_sealer()),
            (None, Some(keys)) => Some(keys.new_blob_sealer()),
            (None, None) => None,
        }
        .transpose()
        .map_err(|e| Error::Corrupt {
            id: id.clone(),
            why: e.to_string(),
        })?;
        let header = format::Header::new(
            self.inner.cfg.chunk_size,
            sealer.as_ref().map(|s| s.header_material()),
            customer.is_some(),
        );
        let mut out = Vec::with_capacity(if file.is_some() {
            WRITE_BUF
        } else {
            format::HEADER_LEN + 1024
        });
        header.encode_into(&mut out);
        let (file, tmp_path) = match file {
            Some((f, p)) => (Some(f), Some(p)),
            None => (None, None),
        };
        Ok(BlobWriter {
            store: self.clone(),
            id,
            inline: file.is_none(),
            tmp_path,
            file,
            pending: None,
            spare: None,
            written: 0,
            synced: 0,
            chunk: BytesMut::new(),
            out,
            chunk_index: 0,
            size: 0,
            sealer,
            done: false,
        })
    }

    fn open_header(
        &self,
        id: &str,
        hbuf: &[u8],
        customer: Option<&CustomerKey>,
    ) -> Result<(format::Header, Option<crypto::Sealer>)> {
        let header = format::Header::decode(hbuf).map_err(|why| Error::Corrupt {
            id: id.to_string(),
            why,
        })?;
        let opener = match &header.crypto {
            Some(material) if header.customer_key => {
                let ck = customer.ok_or_else(|| Error::CustomerKeyRequired(id.to_string()))?;
                Some(
                    ck.blob_opener(material)
                        .map_err(|_| Error::CustomerKeyMismatch(id.to_string()))?,
                )
            }
            Some(material) => {
                let keys = self.inner.keys.as_ref().ok_or_else(|| Error::UnknownKey {
                    id: id.to_string(),
                    key_id: hex::encode(material.key_id),
                })?;
                Some(keys.blob_opener(material).map_err(|e| match e {
                    KeyError::UnknownKey(k) => Error::UnknownKey {
                        id: id.to_string(),
                        key_id: k,
                    },
                    other => Error::Corrupt {
                        id: id.to_string(),
                        why: other.to_string(),
                    },
                })?)
            }
            None => None,
        };
        Ok((header, opener))
    }

    /// Reads `start..end` of the blob's plaintext as a stream, verifying each chunk.
    pub async fn read(&self, blob: &BlobRef, start: u64, end: u64) -> Result<ByteStream> {
        self.read_with(blob, start, end, None).await
    }

    /// [`BlobStore::read`] of a blob that may be sealed with a customer-provided key.
    pub async fn read_with(
        &self,
        blob: &BlobRef,
        start: u64,
        end: u64,
        customer: Option<&CustomerKey>,
    ) -> Result<ByteStream> {
        let path = self.blob_path(&blob.id);
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
            let mut f = std::fs::File::open(path)?;
            let mut h = vec![0u8; format::HEADER_LEN];
            f.read_exact(&mut h)?;
            Ok((f, h))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
        let (file, hbuf) = match opened {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(blob.id.clone()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(Error::Corrupt {
                    id: blob.id.clone(),
                    why: format!("short header: {e}"),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let (file, (header, opener)) = match self.open_header(&blob.id, &hbuf, customer) {
            Ok(x) => (file, x),
            // Read while a key rotation rewrote the header in place (rewrap.rs): read it again.
            Err(Error::Corrupt { .. }) => {
                let again = tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                    let mut h = vec![0u8; format::HEADER_LEN];
                    std::os::unix::fs::FileExt::read_exact_at(&file, &mut h, 0)?;
                    Ok((file, h))
                })
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
                (again.0, self.open_header(&blob.id, &again.1, customer)?)
            }
            Err(e) => return Err(e),
        };
        let end = end.min(blob.size);
        let start = start.min(end);
        let mut reader = ChunkReader::new(
            Source::File(Some(file)),
            blob.id.clone(),
            blob.size,
            &header,
            opener,
            start,
            end,
        );
        reader.seek_start().await?;
        Ok(Box::pin(futures::stream::try_unfold(reader, |mut r| async move {
            match r.next_bytes().await {
                Ok(Some(b)) => Ok(Some((b, r))),
                Ok(None) => Ok(None),
                Err(e) => Err(std::io::Error::other(e)),
            }
        })))
    }

    /// Reads `start..end` of an inline blob from its stored bytes, verifying each chunk.
    pub async fn read_inline(&self, blob: &BlobRef, encoded: Bytes, start: u64, end: u64) -> Result<ByteStream> {
        self.read_inline_with(blob, encoded, start, end, None).await
    }

    /// [`BlobStore::read_inline`] of a blob that may be sealed with a customer-provided key.
    pub async fn read_inline_with(
        &self,
        blob: &BlobRef,
        encoded: Bytes,
        start: u64,
        end: u64,
        customer: Option<&CustomerKey>,
    ) -> Result<ByteStream> {
        if encoded.len() < format::HEADER_LEN {
            return Err(Error::Corrupt {
                id: blob.id.clone(),
                why: "inline blob shorter than its header".into(),
            });
        }
        let (header, opener) = self.open_header(&blob.id, &encoded[..format::HEADER_LEN], customer)?;
        let end = end.min(blob.size);
        let start = start.min(end);
        let mut reader = ChunkReader::new(
            Source::Mem(encoded, 0),
            blob.id.clone(),
            blob.size,
            &header,
            opener,
            start,
            end,
        );
        reader.seek_start().await?;
        // Inline blobs are small: decode the whole range now, so errors surface before any byte.
        let mut parts = Vec::new();
        while let Some(b) = reader.next_bytes().await? {
            parts.push(Ok(b));
        }
        Ok(Box::pin(futures::stream::iter(parts)))
    }

    /// Removes a blob file; a missing blob is not an error. Inline blobs are removed by their owner.
    pub async fn delete(&self, id: &str) -> Result<()> {
        match tokio::fs::remove_file(self.blob_path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Where a blob file lives (for diagnostics and tests).
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.blob_path(id)
    }
}

/// Encoded bytes gathered before one write system call; small enough that many concurrent
/// uploads stay cheap in memory.
const WRITE_BUF: usize = 256 * 1024;

type WriteJob = tokio::task::JoinHandle<(std::fs::File, Vec<u8>, std::io::Result<()>)>;

/// With fsync on, dirty data is flushed every this many bytes while a large blob streams in,
/// so the final fsync is short and the disk works during the upload rather than after it.
const SYNC_EVERY: u64 = 64 * 1024 * 1024;

/// A blob being written. Dropped without finishing, its temp file is removed.
pub struct BlobWriter {
    store: BlobStore,
    id: String,
    inline: bool,
    tmp_path: Option<PathBuf>,
    file: Option<std::fs::File>,
    /// The write in flight on a blocking thread (it holds the file meanwhile), so receiving
    /// and hashing the next bytes overlaps with the disk write of the previous ones.
    pending: Option<WriteJob>,
    /// An emptied buffer to fill next.
    spare: Option<Vec<u8>>,
    written: u64,
    synced: u64,
    chunk: BytesMut,
    out: Vec<u8>,
    chunk_index: u64,
    size: u64,
    sealer: Option<crypto::Sealer>,
    done: bool,
}

impl BlobWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Appends plaintext bytes. A full chunk is sealed only once more data arrives, so the
    /// final chunk can always be sealed with the `last` flag when the blob is finished.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        let cs = self.store.inner.cfg.chunk_size as usize;
        while !data.is_empty() {
            if self.chunk.len() == cs {
                self.seal_chunk(false)?;
                if !self.inline && self.out.len() >= WRITE_BUF {
                    self.flush_out().await?;
                }
            }
            let take = (cs - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.size += take as u64;
        }
        Ok(())
    }

    fn seal_chunk(&mut self, last: bool) -> Result<()> {
        let plain = &self.chunk[..];
        match &self.sealer {
            Some(s) => s
                .seal_into(self.chunk_index, last, plain, &mut self.out)
                .map_err(|e| Error::Corrupt {
                    id: self.id.clone(),
                    why: e.to_string(),
                })?,
            None => {
                self.out.extend_from_slice(plain);
                self.out.extend_from_slice(&crc32c::crc32c(plain).to_be_bytes());
            }
        }
        self.chunk.clear();
        self.chunk_index += 1;
        Ok(())
    }

    /// Waits for the write in flight, if any, and takes the file and its buffer back.
    async fn settle(&mut self) -> Result<()> {
        if let Some(job) = self.pending.take() {
            let (f, mut buf, r) = job.await.map_err(|e| Error::Io(std::io::Error::other(e)))?;
            self.file = Some(f);
            buf.clear();
            self.spare = Some(buf);
            r?;
        }
        Ok(())
    }

    /// Hands `out` to a blocking thread for writing (no copy) and keeps filling a spare buffer
    /// meanwhile; at most one write is in flight.
    async fn flush_out(&mut self) -> Result<()> {
        if self.inline || self.out.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let Some(mut f) = self.file.take() else {
            return Err(Error::Io(std::io::Error::other("blob file already closed")));
        };
        let next = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_BUF + 64 * 1024));
        let buf = std::mem::replace(&mut self.out, next);
        self.written += buf.len() as u64;
        let sync_now = self.store.inner.cfg.fsync && self.written - self.synced >= SYNC_EVERY;
        if sync_now {
            self.synced = self.written;
        }
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut r = f.write_all(&buf);
            if r.is_ok() && sync_now {
                r = f.sync_data();
            }
            (f, buf, r)
        }));
        Ok(())
    }

    /// Seals the last chunk, makes the file durable (per config) and moves it into place.
    pub async fn finish(mut self) -> Result<BlobRef> {
        if !self.chunk.is_empty() {
            self.seal_chunk(true)?;
        }
        self.flush_out().await?;
        self.settle().await?;
        let fsync = self.store.inner.cfg.fsync;
        let (Some(file), Some(tmp)) = (self.file.take(), self.tmp_path.clone()) else {
            return Err(Error::Io(std::io::Error::other("finish() called on an inline blob")));
        };
        if fsync {
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        } else {
            drop(file);
        }
        let dest = self.store.blob_path(&self.id);
        let dir = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::rename(&tmp, &dest).await?;
        if fsync {
            tokio::fs::File::open(&dir).await?.sync_all().await?;
        }
        self.done = true;
        Ok(BlobRef {
            id: self.id.clone(),
            size: self.size,
        })
    }

    /// Seals an inline blob and returns its reference and encoded bytes (header and chunks).
    pub fn finish_inline(mut self) -> Result<(BlobRef, Bytes)> {
        if !self.inline {
            return Err(Error::Io(std::io::Error::other(
                "finish_inline() called on a file blob",
            )));
        }
        if !self.chunk.is_empty() {
            self.seal_chunk(true)?;
        }
        self.done = true;
        let out = std::mem::take(&mut self.out);
        Ok((
            BlobRef {
                id: self.id.clone(),
                size: self.size,
            },
            Bytes::from(out),
        ))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.done
            && let Some(p) = &self.tmp_path
        {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Where encoded chunks come from.
enum Source {
    /// The file is moved to a blocking thread for each read and back.
    File(Option<std::fs::File>),
    /// Encoded bytes and the read position.
    Mem(Bytes, usize),
}

/// Reads and verifies chunks of one blob for a byte range.
struct ChunkReader {
    src: Source,
    id: String,
    size: u64,
    chunk_size: u64,
    overhead: u64,
    opener: Option<crypto::Sealer>,
    next_chunk: u64,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
}

impl ChunkReader {
    fn new(
        src: Source,
        id: String,
        size: u64,
        header: &format::Header,
        opener: Option<crypto::Sealer>,
        start: u64,
        end: u64,
    ) -> Self {
        let chunk_size = header.chunk_size as u64;
        let overhead = if header.crypto.is_some() {
            format::TAG_LEN as u64
        } else {
            format::CRC_LEN as u64
        };
        Self {
            src,
            id,
            size,
            chunk_size,
            overhead,
            opener,
            next_chunk: start / chunk_size,
            pos: start,
            end,
            buf: Vec::new(),
        }
    }

    async fn seek_start(&mut self) -> Result<()> {
        let off = format::HEADER_LEN as u64 + self.next_chunk * (self.chunk_size + self.overhead);
        match &mut self.src {
            Source::File(f) => {
                if let Some(f) = f.as_mut() {
                    f.seek(std::io::SeekFrom::Start(off))?;
                }
            }
            Source::Mem(_, pos) => *pos = off as usize,
        }
        Ok(())
    }

    fn corrupt(&self, why: impl Into<String>) -> Error {
        Error::Corrupt {
            id: self.id.clone(),
            why: why.into(),
        }
    }

    async fn fill(&mut self, want: usize) -> Result<()> {
        self.buf.resize(want, 0);
        let ok = match &mut self.src {
            Source::File(slot) => match slot.take() {
                Some(mut f) => {
                    let mut buf = std::mem::take(&mut self.buf);
                    let (f, buf, r) = tokio::task::spawn_blocking(move || {
                        let r = f.read_exact(&mut buf);
                        (f, buf, r)
                    })
                    .await
                    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
                    *slot = Some(f);
                    self.buf = buf;
                    r.is_ok()
                }
                None => false,
            },
            Source::Mem(data, pos) => match data.get(*pos..*pos + want) {
                Some(slice) => {
                    self.buf.copy_from_slice(slice);
                    *pos += want;
                    true
                }
                None => false,
            },
        };
        if !ok {
            return Err(self.corrupt("blob shorter than its recorded size"));
        }
        Ok(())
    }

    async fn next_bytes(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let total_chunks = self.size.div_ceil(self.chunk_size);
        let last_needed = (self.end - 1) / self.chunk_size;
        let (size, chunk_size) = (self.size, self.chunk_size);
        let plain_len = move |i: u64| {
            if i + 1 == total_chunks {
                size - i * chunk_size
            } else {
                chunk_size
            }
        };
        // Read up to 16 chunks per system call.
        let n = (last_needed + 1 - self.next_chunk).min(16);
        let want: u64 = (self.next_chunk..self.next_chunk + n)
            .map(|i| plain_len(i) + self.overhead)
            .sum();
        self.fill(want as usize).await?;
        let mut out = BytesMut::with_capacity(want as usize);
        let mut off = 0usize;
        for i in self.next_chunk..self.next_chunk + n {
            let len = plain_len(i) as usize;
            let enc = &self.buf[off..off + len + self.overhead as usize];
            off += enc.len();
            let chunk_start = i * self.chunk_size;
            let lo = self.pos.saturating_sub(chunk_start) as usize;
            let hi = (self.end - chunk_start).min(len as u64) as usize;
            match &self.opener {
                Some(o) => {
                    let plain = o
                        .open(i, i + 1 == total_chunks, enc)
                        .map_err(|_| self.corrupt(format!("chunk {i} failed authentication")))?;
                    out.extend_from_slice(&plain[lo..hi]);
                }
                None => {
                    let (data, crc) = enc.split_at(len);
                    let want_crc = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
                    if crc32c::crc32c(data) != want_crc {
                        return Err(self.corrupt(format!("chunk {i} checksum mismatch")));
                    }
                    out.extend_from_slice(&data[lo..hi]);
                }
            }
            self.pos = chunk_start + hi as u64;
        }
        self.next_chunk += n;
        Ok(Some(out.freeze()))
    }
}

#[cfg(test)]
mod tests;
