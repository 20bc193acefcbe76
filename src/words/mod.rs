//! Every sentence a user reads — pages, JSON messages, emails — in one catalogue per language,
//! and the choice of language for a request (`Accept-Language`, RFC 9110 §12.5.4) or for a mail
//! sent later. A language is one `Words` value: a sentence missing from it does not compile.
//!
//! Sentences with values are functions, so each language orders its own words; the templates
//! and handlers only pick which sentence to show.

mod de;
mod en;

use serde::{Deserialize, Serialize};

/// A language the pages and emails are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    #[serde(rename = "en")]
    English,
    #[serde(rename = "de")]
    German,
}

impl Language {
    /// Every language there are words for; the first is the default.
    pub const ALL: [Language; 2] = [Language::English, Language::German];

    /// The BCP 47 tag, as in `<html lang>` and the config file.
    pub fn tag(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::German => "de",
        }
    }

    pub fn words(self) -> &'static Words {
        match self {
            Language::English => &en::WORDS,
            Language::German => &de::WORDS,
        }
    }

    /// The language of a BCP 47 tag's primary subtag (`de-CH` is German), case-insensitively.
    pub fn from_tag(tag: &str) -> Option<Language> {
        let primary = tag.split('-').next().unwrap_or(tag);
        Language::ALL
            .into_iter()
            .find(|l| l.tag().eq_ignore_ascii_case(primary))
    }
}

/// `[ui] language`: follow the browser, or always one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageSetting {
    /// The best match of `Accept-Language`, English when nothing matches.
    Auto,
    Pinned(Language),
}

/// Past this many entries the rest of an `Accept-Language` header is ignored: browsers send a
/// handful, and reading is bounded whatever a client sends.
const MAX_RANGES: usize = 16;

impl LanguageSetting {
    /// The language for a request with these `Accept-Language` values.
    pub fn for_request(self, headers: &http::HeaderMap) -> Language {
        self.for_values(headers.get_all(http::header::ACCEPT_LANGUAGE))
    }

    /// [`Self::for_request`] from `Accept-Language` values kept after the request moved on.
    pub fn for_values<'a>(
        self,
        values: impl IntoIterator<Item = &'a http::HeaderValue>,
    ) -> Language {
        match self {
            LanguageSetting::Pinned(l) => l,
            LanguageSetting::Auto => negotiate(values.into_iter().filter_map(|v| v.to_str().ok()))
                .unwrap_or(Language::English),
        }
    }

    /// The language for a mail sent without a request: the one remembered for the user (the
    /// language 2FA was enabled in), unless the operator pinned one.
    pub fn for_user(self, remembered: Option<Language>) -> Language {
        match self {
            LanguageSetting::Pinned(l) => l,
            LanguageSetting::Auto => remembered.unwrap_or(Language::English),
        }
    }
}

/// The available language the client weighs highest, reading every `Accept-Language` line as
/// one list (RFC 9110 §5.3). A range names a language by its primary subtag (`de-CH` is German,
/// RFC 4647 lookup); `*` stands for every language not named elsewhere; `q=0` means "not this
/// one". Among equal weights the one listed first wins, then the default. `None` when nothing
/// is acceptable; a malformed entry is skipped, never guessed at, and empty ones are ignored.
pub fn negotiate<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<Language> {
    // Per language: (weight, position) of the first range naming it; and the wildcard's.
    let mut named: [Option<(u16, usize)>; Language::ALL.len()] = [None; Language::ALL.len()];
    let mut wildcard: Option<(u16, usize)> = None;
    let ranges = lines
        .into_iter()
        .flat_map(|line| line.split(','))
        .filter(|r| !r.trim().is_empty())
        .take(MAX_RANGES);
    for (position, range) in ranges.enumerate() {
        let mut parts = range.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let Some(weight) = weight(parts) else {
            continue;
        };
        if tag == "*" {
            wildcard.get_or_insert((weight, position));
        } else if let Some(language) = Language::from_tag(tag)
            && let Some(slot) = Language::ALL.iter().position(|l| *l == language)
        {
            named[slot].get_or_insert((weight, position));
        }
    }
    let mut best: Option<(u16, usize, Language)> = None;
    for (slot, language) in Language::ALL.into_iter().enumerate() {
        let Some((weight, position)) = named[slot].or(wildcard) else {
            continue;
        };
        let better = match best {
            None => true,
            Some((w, p, _)) => weight > w || (weight == w && position < p),
        };
        if weight > 0 && better {
            best = Some((weight, position, language));
        }
    }
    best.map(|(_, _, l)| l)
}

/// The `q` of one range in thousandths (1000 when absent); `None` when it is malformed.
fn weight<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        q = parse_q(value.trim())?;
    }
    Some(q)
}

/// RFC 9110 §12.4.2: `0[.ddd]` or `1[.000]`.
fn parse_q(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, b| n * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// "1 minute", "3 minutes": the count and the word's singular or plural.
fn count(n: u64, one: &str, other: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { other })
}

/// One sentence, then another that may be empty.
fn then(first: &str, second: String) -> String {
    if second.is_empty() {
        first.to_owned()
    } else {
        format!("{first} {second}")
    }
}

/// Which emailed code a mail carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePurpose {
    SignIn,
    ConfirmAddress,
    ConfirmChange,
}

/// The security events a user is told about by email.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Enabled,
    Changed,
    Disabled,
    ResetByAdmin,
    RecoveryCodeUsed,
    Locked,
}

/// What went wrong, as an error page tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    AppUnreachable,
    AppTooSlow,
    ChecksUnavailable,
    NotFound,
    TooLarge,
    NotUnderstood,
    Failed,
}

/// An error page's words.
pub struct TroubleWords {
    pub heading: &'static str,
    pub message: String,
    /// When to try again, where that helps.
    pub retry: Option<&'static str>,
}

/// A code email's words.
pub struct CodeMailWords {
    pub subject: String,
    /// Above the code.
    pub your_code: &'static str,
    /// What the code is for, how long it lasts.
    pub use_it: String,
    /// What to do if the user did not ask for it.
    pub warning: &'static str,
}

/// A security notice's words.
pub struct NoticeWords {
    pub subject: String,
    pub heading: &'static str,
    /// What happened, then what to do about it.
    pub lines: [String; 3],
}

/// One language's sentences. Names say where a sentence appears; `fn` fields take the values
/// the sentence names.
pub struct Words {
    pub language: Language,
    /// BCP 47 tag, for `<html lang>`.
    pub lang: &'static str,

    // The seed's own words, used the same way on every page and email.
    pub two_factor: &'static str,
    pub enable_two_factor: &'static str,
    pub method_app: &'static str,
    pub method_email: &'static str,
    pub next: &'static str,
    pub verify: &'static str,
    pub cancel: &'static str,

    // The stepper of both setups.
    pub progress: &'static str,
    pub step_set_up: &'static str,
    pub step_verify: &'static str,
    pub step_save_codes: &'static str,

    // Code fields and their errors, shared by the challenge and settings.
    pub code_label: &'static str,
    pub recovery_code_label: &'static str,
    pub send_new_code: &'static str,
    /// "available in 30 seconds", beside the disabled-in-effect resend button.
    pub available_in: fn(seconds: u64) -> String,
    /// What is left before a lock, or nothing when plenty is.
    pub tries_left: fn(tries: u32) -> String,
    pub wrong_code: fn(tries: u32) -> String,
    pub wait_for_new_code: fn(seconds: u64) -> String,
    pub code_sent_to: fn(to: &str) -> String,
    pub many_codes: &'static str,
    pub send_failed: &'static str,

    // The challenge.
    pub challenge_app: fn(app: &str, user: &str) -> String,
    pub challenge_email_heading: &'static str,
    pub challenge_email: fn(digits: u8, to: &str, app: &str, user: &str, minutes: u64) -> String,
    pub challenge_recovery: fn(app: &str, user: &str) -> String,
    pub use_recovery_code: &'static str,
    pub use_app_instead: &'static str,
    pub use_email_instead: &'static str,
    pub code_not_sent: fn(to: &str) -> String,
    pub new_code_sent: fn(to: &str) -> String,
    pub many_codes_use_recovery: &'static str,
    pub nothing_to_send: &'static str,
    pub no_tries_left: &'static str,
    pub too_many_tries_heading: &'static str,
    pub too_many_tries: &'static str,
    pub sign_in_again_heading: &'static str,
    pub sign_in_ended: fn(minutes: u64) -> String,
    pub go_to_sign_in: &'static str,

    // Settings.
    pub state_app: &'static str,
    pub state_email: fn(to: &str) -> String,
    pub state_off: &'static str,
    pub lead_app: fn(app: &str, user: &str) -> String,
    pub lead_email: fn(app: &str, user: &str) -> String,
    pub lead_off: fn(app: &str) -> String,
    pub app_is_safer: &'static str,
    pub switch_to_app: &'static str,
    pub recovery_left: fn(left: u32) -> String,
    pub change_heading: &'static str,
    pub changes_need_code: &'static str,
    pub email_me_code: &'static str,
    pub new_app: &'static str,
    pub email_instead: &'static str,
    pub new_codes_label: &'static str,
    pub new_codes_button: &'static str,
    pub disable_label: &'static str,
    pub disable_button: &'static str,
    pub cannot_disable: &'static str,
    pub method_app_hint: &'static str,
    pub method_email_hint: &'static str,
    pub back_to_account: &'static str,
    pub done_enabled: &'static str,
    pub done_disabled: &'static str,
    pub done_codes: &'static str,
    pub must_enroll: &'static str,
    pub current_code_failed: fn(tries: u32) -> String,
    pub disable_failed: fn(tries: u32) -> String,
    pub code_failed: fn(tries: u32) -> String,
    pub required_here: &'static str,

    // Authenticator-app setup.
    pub app_setup_heading: &'static str,
    pub scan: &'static str,
    pub qr_label: fn(app: &str, user: &str) -> String,
    pub cant_scan: &'static str,
    pub enter_key: &'static str,
    pub account_issuer: fn(user: &str, issuer: &str) -> String,
    pub current_by_email: &'static str,
    pub current_by_app: &'static str,
    pub enter_app_code: fn(app: &str) -> String,
    pub email_me_change_code: &'static str,
    pub setup_expired: &'static str,
    pub setup_wrong_code: &'static str,

    // Email setup.
    pub email_setup_heading: &'static str,
    pub email_sent: fn(digits: u8, to: &str, minutes: u64) -> String,
    pub current_by_method: &'static str,
    pub code_from_email: &'static str,
    pub other_address: &'static str,
    pub email_is_weaker: &'static str,
    pub address_label: &'static str,
    pub will_send_to: fn(to: &str) -> String,
    pub send_code: &'static str,
    pub send_failed_check_address: &'static str,
    pub address_invalid: &'static str,
    pub address_unknown: &'static str,
    pub email_code_expired: &'static str,
    pub email_wrong_code: &'static str,

    // Recovery codes.
    pub codes_heading: &'static str,
    pub codes_lead: &'static str,
    pub codes_download: &'static str,
    pub codes_saved: &'static str,
    pub codes_replaced: &'static str,
    /// The first lines of the downloaded text file.
    pub codes_file: fn(app: &str, user: &str) -> String,

    // Error pages.
    pub trouble: fn(trouble: Trouble, app: &str) -> TroubleWords,
    pub error_status: fn(status: u16) -> String,
    pub locked_heading: &'static str,
    pub locked: fn(retry_after: u64) -> String,
    pub try_again_in: fn(seconds: u64) -> String,

    // JSON messages (the `error` codes beside them never change with the language).
    pub api_not_found: &'static str,
    pub api_sign_in_first: &'static str,
    pub api_sign_in_again: &'static str,
    pub api_email_unavailable: &'static str,
    pub api_one_code: &'static str,
    pub api_wrong_code: &'static str,
    pub api_address_invalid: &'static str,
    pub api_address_unknown: &'static str,
    pub api_not_enabled: &'static str,
    pub api_try_again: &'static str,
    pub api_setup_expired: &'static str,
    pub api_ask_again_in: fn(seconds: u64) -> String,
    pub api_many_codes: &'static str,
    pub api_send_failed: &'static str,
    pub body_too_large: &'static str,
    pub body_cross_site: &'static str,
    pub body_unreadable: &'static str,
    pub body_late: &'static str,

    // Emails.
    pub code_mail: fn(purpose: CodePurpose, app: &str, user: &str, minutes: u64) -> CodeMailWords,
    pub notice_mail: fn(notice: Notice, app: &str, user: &str) -> NoticeWords,

    // The demo's outbox page.
    pub outbox_heading: &'static str,
    pub outbox_lead: &'static str,
    pub outbox_empty: &'static str,
    pub outbox_to: fn(to: &str) -> String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_highest_weighted_match() {
        let cases = [
            ("de", Some(Language::German)),
            ("de-CH, en;q=0.5", Some(Language::German)),
            ("DE-de", Some(Language::German)),
            ("en-US,en;q=0.9,de;q=0.8", Some(Language::English)),
            ("fr-FR, de;q=0.7, en;q=0.3", Some(Language::German)),
            ("en;q=0.5, de;q=0.9", Some(Language::German)),
            // Equal weights: the first listed.
            ("de;q=0.5, en;q=0.5", Some(Language::German)),
            ("*", Some(Language::English)),
            ("fr, *;q=0.1", Some(Language::English)),
            // q=0 means "not this one".
            ("de;q=0, en;q=0.1", Some(Language::English)),
            ("de;q=0", None),
            ("fr, it", None),
            ("", None),
            // Malformed weights are skipped, not guessed at.
            ("de;q=2, en;q=0.1", Some(Language::English)),
            ("de;q=0.9999", None),
            ("de;q=, en", Some(Language::English)),
            ("de;q=1.5", None),
            ("de;q=1.000", Some(Language::German)),
            ("deu", None),
            ("german", None),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate([header]), want, "{header:?}");
        }
    }

    #[test]
    fn the_wildcard_stands_for_the_languages_not_named() {
        let cases = [
            ("en;q=0, *", Some(Language::German)),
            ("en;q=0.1, *;q=0.5", Some(Language::German)),
            ("de;q=0, *", Some(Language::English)),
            ("de, *;q=0", Some(Language::German)),
            ("en;q=0, de;q=0, *", None),
            ("*;q=0", None),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate([header]), want, "{header:?}");
        }
    }

    #[test]
    fn several_lines_are_one_list() {
        assert_eq!(negotiate(["en;q=0.1", "de"]), Some(Language::German));
        assert_eq!(
            negotiate(["fr", "de;q=0.2, en;q=0.3"]),
            Some(Language::English)
        );
    }

    #[test]
    fn reading_is_bounded_and_skips_empty_entries() {
        let header = format!("{}de", "fr;q=0.9, ".repeat(MAX_RANGES));
        assert_eq!(negotiate([header.as_str()]), None);
        assert_eq!(
            negotiate([",,,,,,,,,,,,,,,,,,,,de"]),
            Some(Language::German)
        );
        let lines = vec!["fr"; MAX_RANGES];
        assert_eq!(negotiate(lines.into_iter().chain(["de"])), None);
    }

    #[test]
    fn the_setting_pins_or_follows() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::ACCEPT_LANGUAGE,
            http::HeaderValue::from_static("fr"),
        );
        headers.append(
            http::header::ACCEPT_LANGUAGE,
            http::HeaderValue::from_static("de;q=0.4"),
        );
        assert_eq!(
            LanguageSetting::Auto.for_request(&headers),
            Language::German
        );
        assert_eq!(
            LanguageSetting::Pinned(Language::English).for_request(&headers),
            Language::English
        );
        assert_eq!(
            LanguageSetting::Auto.for_request(&http::HeaderMap::new()),
            Language::English
        );
        assert_eq!(
            LanguageSetting::Auto.for_user(Some(Language::German)),
            Language::German
        );
        assert_eq!(
            LanguageSetting::Pinned(Language::English).for_user(Some(Language::German)),
            Language::English
        );
    }

    #[test]
    fn tags_round_trip() {
        for l in Language::ALL {
            assert_eq!(Language::from_tag(l.tag()), Some(l));
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.tag()));
        }
    }
}
