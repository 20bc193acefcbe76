//! Checks of a config as a whole, for what takes a site down or turns the second factor off
//! without any single key being malformed: a login page nobody without a session can reach, a
//! prefix over the app's own paths, public paths that cover everything, a password sent to a
//! remote mail relay in clear, cookies without `Secure` on a public address, an override
//! variable that was never applied. [`errors`] refuse the file (`run` and `check-config` exit 2);
//! [`warnings`] are risky choices that may be right.

use super::{Config, MailTransport, Problem, SmtpTls, is_loopback_name};
use crate::login::gate::PathRules;

/// `TWOFA_` variables that are not overrides but are read by the command.
pub const COMMAND_VARIABLES: &[&str] = &["TWOFA_CONFIG", "TWOFA_LOG_FORMAT"];

fn problem(key: &str, message: String) -> Problem {
    Problem {
        key: key.to_owned(),
        message,
    }
}

/// What refuses the file.
pub fn errors(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    let app = &config.app;
    let prefix = &config.twofactor.prefix;
    let rules = PathRules::new(
        prefix.clone(),
        app.login_paths.clone(),
        app.logout_paths.clone(),
        app.public_paths.clone(),
        app.login_page.clone(),
    );
    if app.public_paths.iter().any(|p| p == "/") {
        out.push(problem(
            "app.public_paths",
            "\"/\" makes every path public: nothing would need a session or a second factor. \
             List the app's public prefixes (\"/static/\", \"/login\")"
                .into(),
        ));
    }
    // The app's paths under the prefix would be answered by the proxy, never by the app.
    let app_paths = [
        ("app.login_page", std::slice::from_ref(&app.login_page)),
        ("app.login_paths", &app.login_paths[..]),
        ("app.logout_paths", &app.logout_paths[..]),
        ("app.public_paths", &app.public_paths[..]),
        ("app.success_location", &app.success_location[..]),
    ];
    for (key, paths) in app_paths {
        for path in paths {
            if rules.is_own(path_only(path)) {
                out.push(problem(
                    "twofactor.prefix",
                    format!(
                        "{prefix:?} shadows {key} {path:?}: the proxy answers every path under \
                         its prefix itself, the app would never see it. Choose a prefix the app \
                         does not use"
                    ),
                ));
            }
        }
    }
    let page = path_only(&app.login_page);
    if !rules.is_own(page) && !rules.is_login(page) && !rules.is_public(page) {
        out.push(problem(
            "app.login_page",
            format!(
                "{page:?} is neither in app.public_paths nor in app.login_paths: a browser \
                 without a session is sent there, and from there to it again (a redirect loop). \
                 Add it to app.public_paths"
            ),
        ));
    }
    let smtp = &config.email.smtp;
    if config.email.transport == MailTransport::Smtp
        && smtp.tls == SmtpTls::None
        && smtp.password.is_some()
        && !is_loopback_name(&smtp.host)
    {
        out.push(problem(
            "email.smtp.tls",
            format!(
                "\"none\" to {} with a password sends the password (and every code) in clear \
                 across the network. Use \"starttls\" or \"tls\"",
                smtp.host
            ),
        ));
    }
    if config.session.insecure_http_cookies && !config.server.listen.ip().is_loopback() {
        out.push(problem(
            "session.insecure_http_cookies",
            format!(
                "cookies without Secure on {}, reachable from other hosts: session cookies \
                 would cross the network in clear. Only for development on 127.0.0.1; behind a \
                 TLS-terminating proxy keep it false (browsers keep Secure cookies for https, \
                 and for http://localhost)",
                config.server.listen
            ),
        ));
    }
    out
}

/// Risky choices that load; logged at start and printed by `check-config`.
pub fn warnings(config: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    if config.session.insecure_http_cookies && config.server.listen.ip().is_loopback() {
        out.push(problem(
            "session.insecure_http_cookies",
            "cookies are sent without Secure and without the __Host- prefix: plain-HTTP \
             development only"
                .into(),
        ));
    }
    let smtp = &config.email.smtp;
    if config.email.transport == MailTransport::Smtp
        && smtp.tls == SmtpTls::None
        && smtp.password.is_none()
        && !is_loopback_name(&smtp.host)
    {
        out.push(problem(
            "email.smtp.tls",
            format!(
                "\"none\" to {}: codes cross the network in clear. Use \"starttls\" or \"tls\"",
                smtp.host
            ),
        ));
    }
    for name in &config.ignored_env {
        out.push(problem(
            name,
            "starts with TWOFA_ but is not an override (TWOFA_<SECTION>__<KEY>, two \
             underscores) and was ignored. Kubernetes sets TWOFA_SERVICE_HOST, TWOFA_PORT_... \
             for a Service named twofa: enableServiceLinks: false removes them"
                .into(),
        ));
    }
    out
}

/// A path without its query.
fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// For a `TWOFA_` variable without `__`: the override it was likely meant to be
/// (`TWOFA_SERVER_LISTEN` → `TWOFA_SERVER__LISTEN`), if its words name a known key.
pub fn near_miss(name: &str, known_keys: &[String]) -> Option<String> {
    let rest = name.strip_prefix(super::ENV_PREFIX)?;
    let words = squash(&rest.to_ascii_lowercase());
    known_keys
        .iter()
        .find(|key| squash(&key.replace('.', "_")) == words)
        .map(|key| {
            format!(
                "{}{}",
                super::ENV_PREFIX,
                key.replace('.', "__").to_ascii_uppercase()
            )
        })
}

/// Runs of underscores as one.
fn squash(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_name_the_override_meant() {
        let keys = vec!["server.listen".to_owned(), "email.smtp.host".to_owned()];
        assert_eq!(
            near_miss("TWOFA_SERVER_LISTEN", &keys).as_deref(),
            Some("TWOFA_SERVER__LISTEN")
        );
        assert_eq!(
            near_miss("TWOFA_EMAIL_SMTP__HOST", &keys).as_deref(),
            Some("TWOFA_EMAIL__SMTP__HOST")
        );
        assert_eq!(near_miss("TWOFA_SERVICE_HOST", &keys), None);
        assert_eq!(near_miss("TWOFA_PORT_8080_TCP", &keys), None);
    }
}
