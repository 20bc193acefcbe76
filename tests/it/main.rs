//! Integration tests: real sockets on 127.0.0.1, the demo app and scripted upstreams, the proxy
//! in-process or as the real binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

mod admin;
mod api;
mod browser;
mod bypass;
mod config;
mod connections;
mod deadlines;
mod email;
mod forwarding;
mod kept_sessions;
mod lifecycle;
mod login;
mod login_variants;
mod malformed;
mod realapps;
mod realapps2_django;
mod realapps2_tomcat;
mod rewrites;
mod store;
mod streaming;
mod tls;
mod variants;
mod websocket;
