//! Integration tests: a real server (in-process on an ephemeral port, or the `bak` binary) with
//! a real SQLite file in a temporary directory, spoken to over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failed test

mod admin_collections;
mod auth;
mod backup;
mod browser;
mod cli;
mod cluster;
mod config_errors;
mod dashboard;
mod delivery;
mod durability;
mod events;
mod fields;
mod filters;
mod functions;
mod harness;
mod jobs;
mod live;
mod metrics;
mod migrate;
mod openapi;
mod permissions;
mod pg;
mod postgres;
mod reads;
mod realtime;
mod rest;
mod resume;
mod rules;
mod s3;
mod servers;
mod slow_clients;
mod snapshots;
mod storage;
mod storm;
mod ws;
