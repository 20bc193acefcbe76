//! English, the default: the seed's own words ("Two Factor Authentication", "Enable
//! Two-Factor Authentication", "Method 1 (Recommended): Setup using Authentication App",
//! "Method 2: Setup using Email", Next, Verify), as the app's guide spells them.

use super::{
    CodeMailWords, CodePurpose, Notice, NoticeWords, Trouble, TroubleWords, Words, count, then,
};

fn tries_left(tries: u32) -> String {
    match tries {
        1 => "1 try left before your account is locked for a while.".to_owned(),
        n if n <= 5 => format!("{n} tries left."),
        _ => String::new(),
    }
}

fn minutes(n: u64) -> String {
    count(n, "minute", "minutes")
}

fn seconds(n: u64) -> String {
    count(n, "second", "seconds")
}

fn try_again_in(secs: u64) -> String {
    match secs {
        0..=59 => "Try again in a minute.".to_owned(),
        s => format!("Try again in {}.", minutes(s.div_ceil(60))),
    }
}

fn trouble(trouble: Trouble, app: &str) -> TroubleWords {
    let (heading, message, retry) = match trouble {
        Trouble::AppUnreachable => (
            "The application is not answering",
            format!("{app} could not be reached right now."),
            Some("This is usually brief. Try again in a minute."),
        ),
        Trouble::AppTooSlow => (
            "The application took too long",
            format!("{app} did not answer in time."),
            Some("Try again in a minute. If it keeps happening, tell your administrator."),
        ),
        Trouble::ChecksUnavailable => (
            "Temporarily unavailable",
            "Sign-in checks cannot be made right now, so nothing was sent on.".to_owned(),
            Some("Try again in a minute."),
        ),
        Trouble::NotFound => (
            "Page not found",
            "There is no page at this address.".to_owned(),
            None,
        ),
        Trouble::TooLarge => (
            "Request too large",
            "The request was larger than allowed.".to_owned(),
            None,
        ),
        Trouble::NotUnderstood => (
            "Request not understood",
            "The request could not be handled as sent.".to_owned(),
            None,
        ),
        Trouble::Failed => (
            "Something went wrong",
            "The request could not be completed.".to_owned(),
            Some("Try again in a minute."),
        ),
    };
    TroubleWords {
        heading,
        message,
        retry,
    }
}

fn code_mail(purpose: CodePurpose, app: &str, user: &str, mins: u64) -> CodeMailWords {
    let (subject, what, warning) = match purpose {
        CodePurpose::ConfirmAddress => (
            format!("Confirm your email for {app}"),
            format!("confirm this address for Two Factor Authentication on {app} ({user})"),
            "If you did not ask for this, you can ignore this email: nothing changes without the code.",
        ),
        CodePurpose::ConfirmChange => (
            format!("Confirm a change on {app}"),
            format!("confirm a change to Two Factor Authentication on {app} ({user})"),
            "If you did not ask for this, someone may be signed in as you. Change your password now.",
        ),
        CodePurpose::SignIn => (
            format!("Your {app} sign-in code"),
            format!("sign in to {app} as {user}"),
            "If you did not try to sign in, someone may know your password. Change it now; without this code they cannot get in.",
        ),
    };
    CodeMailWords {
        subject,
        your_code: "Your code is",
        use_it: format!(
            "Use it to {what}. It expires in {} and works once.",
            minutes(mins)
        ),
        warning,
    }
}

fn notice_mail(notice: Notice, app: &str, user: &str) -> NoticeWords {
    let (subject, heading, what) = match notice {
        Notice::Enabled => (
            "Two Factor Authentication is enabled",
            "Two Factor Authentication is enabled",
            "was enabled",
        ),
        Notice::Changed => (
            "Your Two Factor Authentication changed",
            "Two Factor Authentication changed",
            "now uses a different method",
        ),
        Notice::Disabled => (
            "Two Factor Authentication is disabled",
            "Two Factor Authentication is disabled",
            "was disabled",
        ),
        Notice::ResetByAdmin => (
            "Your Two Factor Authentication was reset",
            "Two Factor Authentication was reset",
            "was reset by an administrator",
        ),
        Notice::RecoveryCodeUsed => (
            "A recovery code was used",
            "A recovery code was used",
            "was passed with one of your recovery codes at sign-in",
        ),
        Notice::Locked => (
            "Sign-in paused after wrong codes",
            "Sign-in paused",
            "paused sign-in after several wrong codes",
        ),
    };
    NoticeWords {
        subject: format!("{app}: {subject}"),
        heading,
        lines: [
            format!("Two Factor Authentication for {app} ({user}) {what}."),
            "If this was you, there is nothing to do.".to_owned(),
            "If it was not you, change your password now and tell your administrator.".to_owned(),
        ],
    }
}

pub static WORDS: Words = Words {
    language: super::Language::English,
    lang: "en",

    two_factor: "Two Factor Authentication",
    enable_two_factor: "Enable Two-Factor Authentication",
    method_app: "Method 1 (Recommended): Setup using Authentication App",
    method_email: "Method 2: Setup using Email",
    next: "Next",
    verify: "Verify",
    cancel: "Cancel",

    progress: "Progress",
    step_set_up: "Set up",
    step_verify: "Verify",
    step_save_codes: "Save recovery codes",

    code_label: "Verification code",
    recovery_code_label: "Recovery code",
    send_new_code: "Send a new code",
    available_in: |s| format!("available in {}", seconds(s)),
    tries_left,
    wrong_code: |tries| {
        then(
            "That code did not work. Check the time on your phone and try again.",
            tries_left(tries),
        )
    },
    wait_for_new_code: |s| format!("You can ask for a new code in {}.", seconds(s)),
    code_sent_to: |to| format!("We sent a code to {to}."),
    many_codes: "You have asked for many codes. Try again in an hour.",
    send_failed: "We could not send the code. Try again in a moment.",

    challenge_app: |app, user| {
        format!("Enter the 6-digit code from your authenticator app for {app} ({user}).")
    },
    challenge_email_heading: "Check your email",
    challenge_email: |digits, to, app, user, mins| {
        format!(
            "We sent a {digits}-digit code to {to} for {app} ({user}). It expires in {}.",
            minutes(mins)
        )
    },
    challenge_recovery: |app, user| {
        format!(
            "Enter one of the recovery codes you saved when you enabled Two Factor Authentication for {app} ({user}). Each code works once."
        )
    },
    use_recovery_code: "Use a recovery code",
    use_app_instead: "Use your authenticator app instead",
    use_email_instead: "Use an emailed code instead",
    code_not_sent: |to| format!("We could not send a code to {to}. Try sending it again."),
    new_code_sent: |to| format!("We sent a new code to {to}. Earlier codes no longer work."),
    many_codes_use_recovery: "You have asked for many codes. Try again in an hour, or use a recovery code.",
    nothing_to_send: "This sign-in uses an authenticator app; there is nothing to send.",
    no_tries_left: "That code did not work, and this sign-in has no tries left. Please sign in again.",
    too_many_tries_heading: "Too many tries",
    too_many_tries: "This sign-in had too many wrong codes. Please sign in again.",
    sign_in_again_heading: "Please sign in again",
    sign_in_ended: |mins| {
        format!(
            "For your security, this sign-in step has ended (they last {} and work once).",
            minutes(mins)
        )
    },
    go_to_sign_in: "Go to sign in",

    state_app: "Enabled — authenticator app",
    state_email: |to| format!("Enabled — email to {to}"),
    state_off: "Disabled",
    lead_app: |app, user| {
        format!("Signing in to {app} as {user} asks for a code from your authenticator app.")
    },
    lead_email: |app, user| {
        format!("Signing in to {app} as {user} asks for a code we email to you.")
    },
    lead_off: |app| {
        format!(
            "Add a second step to signing in to {app}: after your password, enter a code only you can get."
        )
    },
    app_is_safer: "An authenticator app is more secure than email codes.",
    switch_to_app: "Switch to an authenticator app (recommended)",
    recovery_left: |n| format!("Recovery codes left: {n}"),
    change_heading: "Change",
    changes_need_code: "Changes need a current code.",
    email_me_code: "Email me a code",
    new_app: "Set up a new authenticator app",
    email_instead: "Use email codes instead",
    new_codes_label: "New recovery codes — enter a current code",
    new_codes_button: "Get new recovery codes",
    disable_label: "To disable, enter a current code or a recovery code",
    disable_button: "Disable Two Factor Authentication",
    cannot_disable: "Your organisation requires Two Factor Authentication, so it cannot be disabled.",
    method_app_hint: "Use 1Password, Authy, LastPass Authenticator, Microsoft Authenticator or Google Authenticator.",
    method_email_hint: "We send a code to your email address each time you sign in. Less secure than an app.",
    back_to_account: "Back to Account Settings",
    done_enabled: "Two Factor Authentication is enabled.",
    done_disabled: "Two Factor Authentication is disabled.",
    done_codes: "Your new recovery codes are ready; the old ones no longer work.",
    must_enroll: "Your organisation requires Two Factor Authentication. Set it up to continue.",
    current_code_failed: |tries| then("Your current code did not work.", tries_left(tries)),
    disable_failed: |tries| {
        then(
            "That code did not work, so Two Factor Authentication is still enabled.",
            tries_left(tries),
        )
    },
    code_failed: |tries| then("That code did not work.", tries_left(tries)),
    required_here: "Two Factor Authentication is required here.",

    app_setup_heading: "Set up your authenticator app",
    scan: "Scan this QR code with your authenticator app (1Password, Authy, LastPass Authenticator, Microsoft Authenticator, Google Authenticator).",
    qr_label: |app, user| format!("QR code for {app} ({user})"),
    cant_scan: "Can't scan?",
    enter_key: "Enter this key in your app instead (time-based, 6 digits):",
    account_issuer: |user, issuer| format!("Account: {user} · Issuer: {issuer}"),
    current_by_email: "Code we email you (or a recovery code)",
    current_by_app: "Code from your current authenticator app (or a recovery code)",
    enter_app_code: |app| format!("Enter the 6-digit code your app shows for {app}"),
    email_me_change_code: "Email me a code for this change",
    setup_expired: "The setup took too long, so here is a new QR code. Scan it again.",
    setup_wrong_code: "That code did not match. Make sure you scanned this QR code, then enter the newest code.",

    email_setup_heading: "Get codes by email",
    email_sent: |digits, to, mins| {
        format!(
            "We sent a {digits}-digit code to {to}. It expires in {}.",
            minutes(mins)
        )
    },
    current_by_method: "Code from your current method (or a recovery code)",
    code_from_email: "Code from the email",
    other_address: "Use a different address",
    email_is_weaker: "Codes by email are less secure than an authenticator app: email accounts are easier to take over, and NIST SP 800-63B does not accept email for strong sign-in. We recommend the app.",
    address_label: "Email address",
    will_send_to: |to| format!("We will send codes to {to}."),
    send_code: "Send code",
    send_failed_check_address: "We could not send the code. Check the address and try again in a moment.",
    address_invalid: "Enter an email address like name@example.com.",
    address_unknown: "No email address is known for your account. Ask your administrator.",
    email_code_expired: "That code expired or had too many wrong tries. Send a new code.",
    email_wrong_code: "That code did not match, or it expired. Check the newest email, or send a new code.",

    codes_heading: "Save your recovery codes",
    codes_lead: "If you lose your phone, each of these codes lets you sign in once. Keep them somewhere safe, like a password manager. They will not be shown again.",
    codes_download: "Download as .txt",
    codes_saved: "I have saved them",
    codes_replaced: "Your old recovery codes no longer work.",
    codes_file: |app, user| {
        format!(
            "{app} recovery codes for {user}\r\nEach code signs you in once if you lose your authenticator app."
        )
    },

    trouble,
    error_status: |status| format!("Error {status}"),
    locked_heading: "Too many wrong codes",
    locked: |secs| {
        format!(
            "To protect your account, sign-in is paused after several wrong codes. {}",
            try_again_in(secs)
        )
    },
    try_again_in,

    api_not_found: "No such API endpoint.",
    api_sign_in_first: "Sign in first.",
    api_sign_in_again: "Sign in again.",
    api_email_unavailable: "Email codes are not offered here.",
    api_one_code: "Codes are strings, one per request.",
    api_wrong_code: "That code did not work.",
    api_address_invalid: "Send {\"address\": \"name@example.com\"}.",
    api_address_unknown: "No email address is known for this account.",
    api_not_enabled: "Two Factor Authentication is disabled.",
    api_try_again: "Try again.",
    api_setup_expired: "The setup expired; start it again.",
    api_ask_again_in: |s| format!("Ask again in {}.", seconds(s)),
    api_many_codes: "Too many codes this hour.",
    api_send_failed: "The code could not be sent; try again.",
    body_too_large: "The request body is too large.",
    body_cross_site: "Cross-site requests are refused.",
    body_unreadable: "The request body could not be read as sent.",
    body_late: "The request body did not arrive in time.",

    code_mail,
    notice_mail,

    outbox_heading: "Demo outbox",
    outbox_lead: "The demo sends no real email: codes and notices land here (newest first) and in the console. This page exists only in the demo.",
    outbox_empty: "No mail yet.",
    outbox_to: |to| format!("To {to}"),
};
