//! The headers a request carries upstream: who the client is (`X-Forwarded-For` read only as
//! far as trusted proxies vouch for it), and the proxy's own cookies and identity header
//! replaced by what the gate verified.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::session::CookieNames;
use crate::session::cookie;

/// The client a request comes from: the peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not one (a client can prepend anything).
pub fn client_addr(trusted_proxies: &[IpNet], headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let trusted = |ip: &IpAddr| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
            v4 => *v4,
        };
        trusted_proxies.iter().any(|n| n.contains(&ip))
    };
    if !trusted(&peer) {
        return peer;
    }
    let chain: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|a| a.trim().parse().ok())
        .collect();
    for hop in chain.iter().rev() {
        match hop {
            Some(ip) if trusted(ip) => {}
            Some(ip) => return *ip,
            // An entry that is no address: nothing to its left can be believed.
            None => break,
        }
    }
    peer
}

/// Readies headers for the upstream: the proxy's cookies and every client copy of the
/// identity header (any case, `_` or `-`) removed, then the verified identity set.
pub fn prepare(
    headers: &mut HeaderMap,
    ours: &CookieNames,
    identity_header: &HeaderName,
    identity: Option<&str>,
) {
    cookie::strip_ours(headers, ours);
    // HeaderName is already lower case; only `_` versus `-` is left to fold. Checked
    // without allocating: this runs on every forwarded request.
    let wanted = identity_header.as_str();
    let is_variant = |name: &HeaderName| super::same_name(name.as_str(), wanted);
    if headers.keys().any(is_variant) {
        let doomed: Vec<HeaderName> = headers.keys().filter(|k| is_variant(k)).cloned().collect();
        for name in doomed {
            headers.remove(name);
        }
    }
    if let Some(user) = identity
        && let Ok(v) = HeaderValue::from_str(user)
    {
        headers.insert(identity_header.clone(), v);
    }
}
