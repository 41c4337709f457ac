//! The audit log: JSON lines to a file rotated by size (`audit.log`, `audit.log.1` ... `.5`)
//! and, if asked, to stdout. Requests hand events to a bounded channel and never wait on the
//! disk; one thread writes them. When the channel is full (the disk cannot keep up) events are
//! dropped and counted, and the count is written as its own line once the writer catches up.

use ironbucket_types::audit::{AuditEvent, AuditSink};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Rotated files kept besides the current one.
const KEEP: usize = 5;

pub struct AuditLog {
    tx: SyncSender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl AuditSink for AuditLog {
    fn record(&self, event: AuditEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Writer {
    path: Option<PathBuf>,
    max_bytes: u64,
    stdout: bool,
    file: Option<std::fs::File>,
    size: u64,
}

impl Writer {
    fn open(&mut self) -> std::io::Result<()> {
        let Some(p) = &self.path else { return Ok(()) };
        if let Some(dir) = p.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let f = o.open(p)?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(p) = self.path.clone() else { return Ok(()) };
        self.file = None;
        let name = |i: usize| {
            let mut s = p.clone().into_os_string();
            s.push(format!(".{i}"));
            PathBuf::from(s)
        };
        let _ = std::fs::remove_file(name(KEEP));
        for i in (1..KEEP).rev() {
            let _ = std::fs::rename(name(i), name(i + 1));
        }
        std::fs::rename(&p, name(1))?;
        self.open()
    }

    fn write(&mut self, line: &str) {
        if self.stdout {
            crate::stdout_line(line);
        }
        if self.path.is_none() {
            return;
        }
        if self.size + line.len() as u64 + 1 > self.max_bytes
            && self.size > 0
            && let Err(e) = self.rotate()
        {
            tracing::warn!(error = %e, "cannot rotate the audit log");
        }
        if self.file.is_none()
            && let Err(e) = self.open()
        {
            tracing::warn!(error = %e, "cannot open the audit log");
            return;
        }
        if let Some(f) = &mut self.file {
            match writeln!(f, "{line}") {
                Ok(()) => self.size += line.len() as u64 + 1,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the audit log");
                    self.file = None;
                }
            }
        }
    }
}

impl AuditLog {
    /// Starts the writer thread. Fails when the file cannot be opened.
    pub fn start(path: Option<PathBuf>, max_bytes: u64, stdout: bool) -> std::io::Result<Arc<Self>> {
        let mut w = Writer {
            path,
            max_bytes,
            stdout,
            file: None,
            size: 0,
        };
        w.open()?;
        let (tx, rx) = sync_channel::<AuditEvent>(8192);
        let dropped = Arc::new(AtomicU64::new(0));
        let seen = dropped.clone();
        std::thread::Builder::new().name("audit-log".into()).spawn(move || {
            let mut reported = 0;
            while let Ok(ev) = rx.recv() {
                let now = seen.load(Ordering::Relaxed);
                if now > reported {
                    w.write(&format!("{{\"dropped_events\":{}}}", now - reported));
                    reported = now;
                }
                match serde_json::to_string(&ev) {
                    Ok(line) => w.write(&line),
                    Err(e) => tracing::warn!(error = %e, "cannot encode an audit event"),
                }
                if let Some(f) = &mut w.file {
                    let _ = f.flush();
                }
            }
        })?;
        Ok(Arc::new(Self { tx, dropped }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            time: "t".into(),
            api: "admin",
            principal: "p".into(),
            source: "127.0.0.1".into(),
            action: format!("POST /x/{i}"),
            resource: "/x".into(),
            result: "allowed".into(),
            status: 200,
            error: None,
            request_id: None,
        }
    }

    #[test]
    fn lines_are_json_and_the_file_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(Some(path.clone()), 2000, false).unwrap();
        for i in 0..100 {
            log.record(event(i));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let rotated = |i: usize| dir.path().join(format!("audit.log.{i}"));
        while !(rotated(1).exists()
            && std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("POST /x/99"))
        {
            assert!(std::time::Instant::now() < deadline, "no rotation");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!rotated(KEEP + 1).exists());
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["action"].as_str().unwrap().starts_with("POST /x/"));
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 2000);
    }
}
