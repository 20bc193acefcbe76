//! Integration tests: real sockets on 127.0.0.1, the demo app and scripted upstreams, the proxy
//! in-process or as the real binary; with `--features external-tools`, also real outside
//! programs (Redis, an SMTP server, Chromium, oathtool and zbarimg, Flask, Django, Tomcat).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::zombie_processes
)]

mod support;

// Tier 1 (`cargo test`): the demo app, scripted upstreams, TLS servers and the proxy on
// 127.0.0.1, nothing outside cargo. A test in these files that starts or calls an outside program
// is ignored without the `external-tools` feature ("needs external-tools").
mod api;
mod bypass;
mod config;
mod connections;
mod deadlines;
mod email;
mod forwarding;
mod language;
mod lifecycle;
mod login;
mod login_variants;
mod malformed;
mod records;
mod records_postgres;
mod rewrites;
mod store;
mod streaming;
mod tls;
mod variants;
mod websocket;

// Tier 2 only (`cargo test --features external-tools`, or scripts/test): every test in these files
// needs outside programs.
#[cfg(feature = "external-tools")]
mod admin; // oathtool
#[cfg(feature = "external-tools")]
mod browser; // chromium, chromedriver, oathtool, aiosmtpd
#[cfg(feature = "external-tools")]
mod kept_sessions; // oathtool, redis-server
#[cfg(feature = "external-tools")]
mod realapps; // python3 with flask, hypercorn and aiosmtpd; oathtool
#[cfg(feature = "external-tools")]
mod realapps2_django; // python3 with django; oathtool
#[cfg(feature = "external-tools")]
mod realapps2_tomcat; // java, Tomcat 10 in /usr/share/tomcat10; oathtool
#[cfg(feature = "external-tools")]
mod store_ha; // redis-server (Sentinel, Cluster, TLS), redis-cli; oathtool
