//! The emails the proxy sends, in plain text and HTML, branded with the app name. All their
//! words live here.

use askama::Template;

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
    app_name: &'a str,
    code: &'a str,
    purpose: &'a str,
    minutes: u64,
    warning: &'a str,
}

#[derive(Template)]
#[template(path = "mail/notice.html")]
struct NoticeHtml<'a> {
    app_name: &'a str,
    heading: &'a str,
    lines: &'a [String],
}

/// A one-time code, for signing in or for confirming the address at enrollment.
pub fn code_mail(
    app_name: &str,
    to: &str,
    user: &str,
    code: &str,
    minutes: u64,
    kind: MailKind,
) -> Mail {
    let (subject, purpose, warning) = match kind {
        MailKind::EnrollmentCode => (
            format!("Confirm your email for {app_name}"),
            format!("confirm this address for two-step verification on {app_name} ({user})"),
            "If you did not ask for this, you can ignore this email: nothing changes without the code.",
        ),
        MailKind::ChangeCode => (
            format!("Confirm a change on {app_name}"),
            format!("confirm a change to two-step verification on {app_name} ({user})"),
            "If you did not ask for this, someone may be signed in as you. Change your password now.",
        ),
        _ => (
            format!("Your {app_name} sign-in code"),
            format!("sign in to {app_name} as {user}"),
            "If you did not try to sign in, someone may know your password. Change it now; without this code they cannot get in.",
        ),
    };
    let text = format!(
        "Your code is {code}\r\n\r\nUse it to {purpose}. It expires in {minutes} minutes and works once.\r\n\r\n{warning}\r\n"
    );
    let html = CodeHtml {
        app_name,
        code,
        purpose: &purpose,
        minutes,
        warning,
    }
    .render()
    .unwrap_or_else(|_| text.clone());
    Mail {
        to: to.to_owned(),
        subject,
        text,
        html,
        kind,
    }
}

/// The security events a user is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Enabled,
    Changed,
    Disabled,
    ResetByAdmin,
    RecoveryCodeUsed,
    Locked,
}

pub fn notice_mail(app_name: &str, to: &str, user: &str, notice: Notice) -> Mail {
    let (subject, heading, what) = match notice {
        Notice::Enabled => (
            "Two-step verification is on",
            "Two-step verification is on",
            "was turned on",
        ),
        Notice::Changed => (
            "Your two-step verification changed",
            "Two-step verification changed",
            "now uses a different method",
        ),
        Notice::Disabled => (
            "Two-step verification is off",
            "Two-step verification is off",
            "was turned off",
        ),
        Notice::ResetByAdmin => (
            "Your two-step verification was reset",
            "Two-step verification was reset",
            "was reset by an administrator",
        ),
        Notice::RecoveryCodeUsed => (
            "A recovery code was used",
            "A recovery code was used",
            "was passed with one of your recovery codes",
        ),
        Notice::Locked => (
            "Sign-in paused after wrong codes",
            "Sign-in paused",
            "paused sign-in after several wrong codes",
        ),
    };
    let lines = vec![
        format!("Two-step verification for {app_name} ({user}) {what}."),
        "If this was you, there is nothing to do.".to_owned(),
        "If it was not you, change your password now and tell your administrator.".to_owned(),
    ];
    let text = lines.join("\r\n\r\n") + "\r\n";
    let html = NoticeHtml {
        app_name,
        heading,
        lines: &lines,
    }
    .render()
    .unwrap_or_else(|_| text.clone());
    Mail {
        to: to.to_owned(),
        subject: format!("{app_name}: {subject}"),
        text,
        html,
        kind: MailKind::Notice,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_mails_say_what_when_and_what_if_not() {
        let m = code_mail(
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
        assert!(
            m.html.contains("Acme &#60;Books&#62;") || m.html.contains("Acme &lt;Books&gt;"),
            "{}",
            m.html
        );
        let e = code_mail(
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
        let m = notice_mail("Acme", "a@example.com", "alice", Notice::Disabled);
        assert!(m.subject.contains("off"));
        assert!(m.text.contains("was turned off"));
        assert!(m.html.contains("change your password"));
    }
}
