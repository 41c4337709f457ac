//! The server's integration tests, one module per area, in one test binary (one link instead
//! of one per file: most of a cold CI build's time went into linking 30 binaries). Each starts
//! real `ironbucket` processes on 127.0.0.1 and drives them with a real S3 client;
//! `cargo nextest run -p ironbucket-server --test it <module>::` runs one area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod anti_entropy;
mod architecture;
mod auth_and_bad_input;
mod chunked_sigv4;
mod clock;
mod cluster;
mod conditional_writes;
mod cors;
mod dev_cluster;
mod durability;
mod handoff;
mod keys;
mod leases;
mod lifecycle;
mod linearizable_reads;
mod object_lock;
mod partition;
mod policies;
mod post_object;
mod protocol;
mod quotas;
mod rebalance;
mod replication_backlog;
mod rereplication;
mod s3_api;
mod s3_compatibility;
mod security;
mod sse;
mod versioning;
mod workers;
