//! The emails the proxy sends, in plain text and HTML, branded with the app name, in the
//! words of [`crate::words`].

use askama::Template;

pub use crate::words::Notice;
use crate::words::{CodeMailWords, CodePurpose, NoticeWords, Words};

/// A rendered email, ready for any transport.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// What this mail is, for logs and metrics (never its content).
    pub kind: MailKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    LoginCode,
    EnrollmentCode,
    /// Confirms a change in the 2FA settings (the user's method is email).
    ChangeCode,
    Notice,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::LoginCode => "login_code",
            MailKind::EnrollmentCode => "enrollment_code",
            MailKind::ChangeCode => "change_code",
            MailKind::Notice => "notice",
        }
    }
}

#[derive(Template)]
#[template(path = "mail/code.html")]
struct CodeHtml<'a> {
    lang: &'a str,
    app_name: &'a str,
    code: &'a str,
    words: &'a CodeMailWords,
}

#[derive(Template)]
#[template(path = "mail/notice.html")]
struct NoticeHtml<'a> {
    lang: &'a str,
    app_name: &'a str,
    words: &'a NoticeWords,
}

/// A one-time code, for signing in or for confirming the address or a change.
pub fn code_mail(
    w: &Words,
    app_name: &str,
    to: &str,
    user: &str,
    code: &str,
    minutes: u64,
    kind: MailKind,
) -> Mail {
    let purpose = match kind {
        MailKind::EnrollmentCode => CodePurpose::ConfirmAddress,
        MailKind::ChangeCode => CodePurpose::ConfirmChange,
        _ => CodePurpose::SignIn,
    };
    let words = (w.code_mail)(purpose, app_name, user, minutes);
    let text = format!(
        "{} {code}\r\n\r\n{}\r\n\r\n{}\r\n",
        words.your_code, words.use_it, words.warning
    );
    let html = CodeHtml {
        lang: w.lang,
        app_name,
        code,
        words: &words,
    }
    .render();
    finish(to, words.subject, text, html, kind)
}

pub fn notice_mail(w: &Words, app_name: &str, to: &str, user: &str, notice: Notice) -> Mail {
    let words = (w.notice_mail)(notice, app_name, user);
    let text = words.lines.join("\r\n\r\n") + "\r\n";
    let html = NoticeHtml {
        lang: w.lang,
        app_name,
        words: &words,
    }
    .render();
    finish(to, words.subject, text, html, MailKind::Notice)
}

/// The mail, its HTML part falling back to the text (templates are compiled in; rendering
/// fails only on a formatter error).
fn finish(
    to: &str,
    subject: String,
    text: String,
    html: askama::Result<String>,
    kind: MailKind,
) -> Mail {
    Mail {
        to: to.to_owned(),
        html: html.unwrap_or_else(|_| text.clone()),
        subject,
        text,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::Language;

    #[test]
    fn code_mails_say_what_when_and_what_if_not() {
        let m = code_mail(
            Language::English.words(),
            "Acme <Books>",
            "a@example.com",
            "alice",
            "123456",
            10,
            MailKind::LoginCode,
        );
        assert_eq!(m.subject, "Your Acme <Books> sign-in code");
        assert!(m.text.contains("123456"));
        assert!(m.text.contains("expires in 10 minutes"));
        assert!(m.text.contains("did not try to sign in"));
        assert!(m.html.contains("123456"));
        assert!(m.html.contains("<html lang=\"en\">"));
        assert!(
            m.html.contains("Acme &#60;Books&#62;") || m.html.contains("Acme &lt;Books&gt;"),
            "{}",
            m.html
        );
        let e = code_mail(
            Language::English.words(),
            "Acme",
            "a@example.com",
            "alice",
            "654321",
            10,
            MailKind::EnrollmentCode,
        );
        assert!(e.text.contains("confirm this address"));
    }

    #[test]
    fn notices() {
        let m = notice_mail(
            Language::English.words(),
            "Acme",
            "a@example.com",
            "alice",
            Notice::Disabled,
        );
        assert_eq!(m.subject, "Acme: Two Factor Authentication is disabled");
        assert!(m.text.contains("was disabled"));
        assert!(m.html.contains("change your password"));
    }

    /// Every mail in every language: the code and the names are there, and no sentence of one
    /// language shows up in another (a sentence written outside the catalogue would).
    #[test]
    fn every_mail_is_written_in_its_language() {
        let kinds = [
            MailKind::LoginCode,
            MailKind::EnrollmentCode,
            MailKind::ChangeCode,
        ];
        let notices = [
            Notice::Enabled,
            Notice::Changed,
            Notice::Disabled,
            Notice::ResetByAdmin,
            Notice::RecoveryCodeUsed,
            Notice::Locked,
        ];
        let render = |l: Language| -> Vec<Mail> {
            let w = l.words();
            let codes = kinds
                .iter()
                .map(|&k| code_mail(w, "Acme", "a@example.com", "ann", "482913", 10, k));
            let notes = notices
                .iter()
                .map(|&n| notice_mail(w, "Acme", "a@example.com", "ann", n));
            codes.chain(notes).collect()
        };
        let english = render(Language::English);
        for other in Language::ALL.into_iter().skip(1) {
            for (en, mail) in english.iter().zip(render(other)) {
                assert!(mail.html.contains(&format!("lang=\"{}\"", other.tag())));
                assert!(mail.subject.contains("Acme"), "{}", mail.subject);
                if mail.kind != MailKind::Notice {
                    assert!(mail.text.contains("482913") && mail.html.contains("482913"));
                }
                assert_ne!(en.subject, mail.subject);
                for line in en.text.split("\r\n").filter(|l| l.len() > 3) {
                    assert!(
                        !mail.text.contains(line),
                        "{other:?} mail {:?} has the English {line:?}",
                        mail.kind
                    );
                }
            }
        }
    }
}
