//! twofa-proxy adds two-factor authentication to an existing web app, as a reverse proxy.
//!
//! A request's path through the proxy:
//!
//! 1. [`listener`] accepts the connection (TCP, optional rustls TLS), speaks HTTP/1.1 or HTTP/2,
//!    and records the peer in [`listener::ConnInfo`]; idle HTTP/1.1 connections park, holding
//!    only their socket.
//! 2. [`app`] is the composition root: request ids and sensitive-header marking wrap the router.
//! 3. [`router`] refuses ambiguous framing (smuggling), serves the proxy's own prefix (`/_2fa`:
//!    [`web`], one route table for the pages and the JSON API), watches the app's login
//!    ([`login`]) and hands everything else on; every refusal is written by
//!    [`web::refusal`].
//! 4. [`auth`] holds the 2FA rules (sign-in after the password, challenge, verification,
//!    lockout, enrollment, notices, the admin reset) with no HTTP in their signatures; [`web`]
//!    and [`login`] translate requests into calls and outcomes into responses.
//! 5. [`upstream`] forwards it: hop-by-hop headers out, X-Forwarded-* in, the worker's own
//!    connections to the app, 502/504, WebSocket tunnels; the answer streams back untouched.
//!
//! Around it: [`session`] (sessions, cookies, the binding to the app session), [`store`]
//! (what may be lost: memory or Redis), [`records`] (who has 2FA: SQLite), [`secrets`], [`mail`], [`words`] (every sentence a user reads, per
//! language, and the choice of language), [`config`] (TOML + env), [`admin`] (health,
//! readiness, metrics on their own listener), [`metrics`], [`telemetry`], and [`demo`] (the
//! stand-in app for `twofa-proxy demo`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod clock;
pub mod config;
pub mod demo;
pub mod health;
pub mod listener;
pub mod loadtest;
pub mod login;
pub mod mail;
pub mod metrics;
pub mod records;
pub mod router;
pub mod secrets;
pub mod session;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod web;
pub mod words;
