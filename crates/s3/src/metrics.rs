//! Prometheus metrics of the S3 front end.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct S3Metrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// Requests being served now (from their headers until their response headers).
    pub in_flight: IntGauge,
}

/// Counts one request in flight while it lives.
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    pub(crate) fn start(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl S3Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ironbucket_s3_requests_total",
                "S3 requests by operation and HTTP status",
            ),
            &["operation", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "ironbucket_s3_request_duration_seconds",
                "S3 request latency until response headers, by operation",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["operation"],
        )?;
        let bytes_in = IntCounter::new(
            "ironbucket_s3_received_bytes_total",
            "Request body bytes announced by Content-Length",
        )?;
        let bytes_out = IntCounter::new(
            "ironbucket_s3_sent_bytes_total",
            "Response body bytes announced by Content-Length",
        )?;
        let in_flight = IntGauge::new(
            "ironbucket_s3_requests_in_flight",
            "S3 requests being served now (until their response headers)",
        )?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        Ok(Self {
            requests,
            duration,
            bytes_in,
            bytes_out,
            in_flight,
        })
    }
}
