//! The audit record: one JSON line per mutating admin call and per S3 request refused for
//! authorization. The S3 front end and the admin API build [`AuditEvent`]s and hand them to an
//! [`AuditSink`]; the binary owns the sink (a rotated file and/or stdout).

use serde::Serialize;

/// One audited event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339 UTC time, milliseconds.
    pub time: String,
    /// `s3` or `admin`.
    pub api: &'static str,
    /// Who: an access key id, `anonymous`, an admin token's name, or `unauthenticated`.
    pub principal: String,
    /// The client address (after trusted-proxy resolution on the S3 port).
    pub source: String,
    /// The operation (`DeleteObject`, `POST /cluster/nodes/node-2/drain`).
    pub action: String,
    /// What it acted on (`bucket/key`, a node name, a path).
    pub resource: String,
    /// `allowed`, `denied` or `failed`, and the status.
    pub result: String,
    pub status: u16,
    /// The error code or message, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Where audit events go.
pub trait AuditSink: Send + Sync {
    fn record(&self, event: AuditEvent);
}

/// Formats `millis` since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        millis % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
