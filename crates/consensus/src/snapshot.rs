//! Control-plane snapshots as files, streamed end to end: the state is serialized straight into
//! a file (no copy of its bytes in memory), openraft sends it to a follower in chunks read from
//! the file, the follower writes the chunks into a file and the state is deserialized from it.
//! The format is the one earlier releases kept in memory (the JSON of `store::Applied`), so
//! nodes of either kind exchange snapshots unchanged.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A snapshot file as openraft's snapshot data. Reads, writes and seeks are synchronous file
/// calls: on a multi-threaded runtime they run under `block_in_place` (the worker hands its
/// other tasks off while it waits), on the single-threaded one of the deterministic simulation
/// inline (a blocking-pool thread would make the run depend on the disk's timing).
#[derive(Debug)]
pub struct SnapshotFile {
    file: std::fs::File,
    path: PathBuf,
    /// Where the last `start_seek` landed.
    pos: u64,
}

impl SnapshotFile {
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: std::fs::File::open(path)?,
            path: path.to_path_buf(),
            pos: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file, positioned at its start.
    pub(crate) fn into_file(mut self) -> std::io::Result<std::fs::File> {
        self.file.seek(SeekFrom::Start(0))?;
        Ok(self.file)
    }

    /// A new file to receive a snapshot into.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            pos: 0,
        })
    }

    /// Makes what was written durable.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

fn io<R>(f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl tokio::io::AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let n = io(|| me.file.read(buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for SnapshotFile {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        Poll::Ready(io(|| me.file.write(buf)))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let me = self.get_mut();
        me.pos = io(|| me.file.seek(position))?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Poll::Ready(Ok(self.pos))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    /// openraft writes received chunks at their offsets, then reads the file from the start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_written_at_offsets_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.snap");
        let mut f = SnapshotFile::create(&path).unwrap();
        f.write_all(b"hello ").await.unwrap();
        f.seek(SeekFrom::Start(6)).await.unwrap();
        f.write_all(b"world").await.unwrap();
        f.seek(SeekFrom::Start(0)).await.unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
