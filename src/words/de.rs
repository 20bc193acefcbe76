//! German (Sie-Form), the second language: it proves that every sentence comes from the
//! catalogue. The seed's steps keep their order and their place on each page, so the app's guide
//! still maps onto them.

use super::{
    CodeMailWords, CodePurpose, Notice, NoticeWords, Trouble, TroubleWords, Words, count, then,
};

fn tries_left(tries: u32) -> String {
    match tries {
        1 => "Noch 1 Versuch, dann wird Ihr Konto für eine Weile gesperrt.".to_owned(),
        n if n <= 5 => format!("Noch {n} Versuche."),
        _ => String::new(),
    }
}

fn minutes(n: u64) -> String {
    count(n, "Minute", "Minuten")
}

/// "in einer Minute", "in 3 Minuten": after "in", one is written out (both words are feminine).
fn within(n: u64, one: &str, other: &str) -> String {
    if n <= 1 {
        format!("in einer {one}")
    } else {
        format!("in {n} {other}")
    }
}

fn in_minutes(n: u64) -> String {
    within(n, "Minute", "Minuten")
}

fn in_seconds(n: u64) -> String {
    within(n, "Sekunde", "Sekunden")
}

fn try_again_in(secs: u64) -> String {
    format!(
        "Versuchen Sie es {} erneut.",
        in_minutes(secs.div_ceil(60).max(1))
    )
}

fn trouble(trouble: Trouble, app: &str) -> TroubleWords {
    let (heading, message, retry) = match trouble {
        Trouble::AppUnreachable => (
            "Die Anwendung antwortet nicht",
            format!("{app} ist gerade nicht erreichbar."),
            Some("Das dauert meist nicht lange. Versuchen Sie es in einer Minute erneut."),
        ),
        Trouble::AppTooSlow => (
            "Die Anwendung hat zu lange gebraucht",
            format!("{app} hat nicht rechtzeitig geantwortet."),
            Some(
                "Versuchen Sie es in einer Minute erneut. Wenn es wieder passiert, wenden Sie sich an Ihre Administration.",
            ),
        ),
        Trouble::ChecksUnavailable => (
            "Vorübergehend nicht verfügbar",
            "Die Anmeldung kann gerade nicht geprüft werden, daher wurde nichts weitergeleitet."
                .to_owned(),
            Some("Versuchen Sie es in einer Minute erneut."),
        ),
        Trouble::NotFound => (
            "Seite nicht gefunden",
            "Unter dieser Adresse gibt es keine Seite.".to_owned(),
            None,
        ),
        Trouble::TooLarge => (
            "Anfrage zu groß",
            "Die Anfrage war größer als erlaubt.".to_owned(),
            None,
        ),
        Trouble::NotUnderstood => (
            "Anfrage nicht verstanden",
            "Die Anfrage konnte so nicht bearbeitet werden.".to_owned(),
            None,
        ),
        Trouble::Failed => (
            "Etwas ist schiefgegangen",
            "Die Anfrage konnte nicht abgeschlossen werden.".to_owned(),
            Some("Versuchen Sie es in einer Minute erneut."),
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
            format!("Bestätigen Sie Ihre E-Mail-Adresse für {app}"),
            format!(
                "Mit diesem Code bestätigen Sie diese Adresse für die Zwei-Faktor-Authentifizierung bei {app} ({user})."
            ),
            "Wenn Sie das nicht angefordert haben, können Sie diese E-Mail ignorieren: Ohne den Code ändert sich nichts.",
        ),
        CodePurpose::ConfirmChange => (
            format!("Bestätigen Sie eine Änderung bei {app}"),
            format!(
                "Mit diesem Code bestätigen Sie eine Änderung der Zwei-Faktor-Authentifizierung bei {app} ({user})."
            ),
            "Wenn Sie das nicht angefordert haben, ist vielleicht jemand als Sie angemeldet. Ändern Sie jetzt Ihr Passwort.",
        ),
        CodePurpose::SignIn => (
            format!("Ihr Anmeldecode für {app}"),
            format!("Mit diesem Code melden Sie sich bei {app} als {user} an."),
            "Wenn Sie sich nicht anmelden wollten, kennt vielleicht jemand Ihr Passwort. Ändern Sie es jetzt; ohne diesen Code kann sich niemand anmelden.",
        ),
    };
    CodeMailWords {
        subject,
        your_code: "Ihr Code lautet",
        use_it: format!(
            "{what} Er läuft {} ab und gilt nur einmal.",
            in_minutes(mins)
        ),
        warning,
    }
}

fn notice_mail(notice: Notice, app: &str, user: &str) -> NoticeWords {
    let (subject, heading, what) = match notice {
        Notice::Enabled => (
            "Zwei-Faktor-Authentifizierung ist aktiviert",
            "Zwei-Faktor-Authentifizierung ist aktiviert",
            "wurde aktiviert",
        ),
        Notice::Changed => (
            "Ihre Zwei-Faktor-Authentifizierung wurde geändert",
            "Zwei-Faktor-Authentifizierung geändert",
            "verwendet jetzt eine andere Methode",
        ),
        Notice::Disabled => (
            "Zwei-Faktor-Authentifizierung ist deaktiviert",
            "Zwei-Faktor-Authentifizierung ist deaktiviert",
            "wurde deaktiviert",
        ),
        Notice::ResetByAdmin => (
            "Ihre Zwei-Faktor-Authentifizierung wurde zurückgesetzt",
            "Zwei-Faktor-Authentifizierung zurückgesetzt",
            "wurde von der Administration zurückgesetzt",
        ),
        Notice::RecoveryCodeUsed => (
            "Ein Wiederherstellungscode wurde verwendet",
            "Ein Wiederherstellungscode wurde verwendet",
            "wurde bei einer Anmeldung mit einem Ihrer Wiederherstellungscodes bestätigt",
        ),
        Notice::Locked => (
            "Anmeldung nach falschen Codes angehalten",
            "Anmeldung angehalten",
            "hat die Anmeldung nach mehreren falschen Codes angehalten",
        ),
    };
    NoticeWords {
        subject: format!("{app}: {subject}"),
        heading,
        lines: [
            format!("Die Zwei-Faktor-Authentifizierung für {app} ({user}) {what}."),
            "Wenn Sie das waren, ist nichts weiter zu tun.".to_owned(),
            "Wenn nicht, ändern Sie jetzt Ihr Passwort und informieren Sie Ihre Administration."
                .to_owned(),
        ],
    }
}

pub static WORDS: Words = Words {
    language: super::Language::German,
    lang: "de",

    two_factor: "Zwei-Faktor-Authentifizierung",
    enable_two_factor: "Zwei-Faktor-Authentifizierung aktivieren",
    method_app: "Methode 1 (empfohlen): Einrichtung mit einer Authentifizierungs-App",
    method_email: "Methode 2: Einrichtung per E-Mail",
    next: "Weiter",
    verify: "Bestätigen",
    cancel: "Abbrechen",

    progress: "Fortschritt",
    step_set_up: "Einrichten",
    step_verify: "Bestätigen",
    step_save_codes: "Wiederherstellungscodes sichern",

    code_label: "Bestätigungscode",
    recovery_code_label: "Wiederherstellungscode",
    send_new_code: "Neuen Code senden",
    available_in: |s| format!("{} möglich", in_seconds(s)),
    tries_left,
    wrong_code: |tries| {
        then(
            "Dieser Code hat nicht funktioniert. Prüfen Sie die Uhrzeit auf Ihrem Telefon und versuchen Sie es erneut.",
            tries_left(tries),
        )
    },
    wait_for_new_code: |s| format!("Sie können {} einen neuen Code anfordern.", in_seconds(s)),
    code_sent_to: |to| format!("Wir haben einen Code an {to} gesendet."),
    many_codes: "Sie haben viele Codes angefordert. Versuchen Sie es in einer Stunde erneut.",
    send_failed: "Der Code konnte nicht gesendet werden. Versuchen Sie es gleich noch einmal.",

    challenge_app: |app, user| {
        format!(
            "Geben Sie den 6-stelligen Code aus Ihrer Authentifizierungs-App für {app} ({user}) ein."
        )
    },
    challenge_email_heading: "Prüfen Sie Ihr E-Mail-Postfach",
    challenge_email: |digits, to, app, user, mins| {
        format!(
            "Wir haben einen {digits}-stelligen Code für {app} ({user}) an {to} gesendet. Er läuft {} ab.",
            in_minutes(mins)
        )
    },
    challenge_recovery: |app, user| {
        format!(
            "Geben Sie einen der Wiederherstellungscodes ein, die Sie beim Aktivieren der Zwei-Faktor-Authentifizierung für {app} ({user}) gesichert haben. Jeder Code gilt nur einmal."
        )
    },
    use_recovery_code: "Wiederherstellungscode verwenden",
    use_app_instead: "Stattdessen die Authentifizierungs-App verwenden",
    use_email_instead: "Stattdessen einen Code per E-Mail verwenden",
    code_not_sent: |to| {
        format!("Wir konnten keinen Code an {to} senden. Versuchen Sie, ihn noch einmal zu senden.")
    },
    new_code_sent: |to| {
        format!("Wir haben einen neuen Code an {to} gesendet. Frühere Codes gelten nicht mehr.")
    },
    many_codes_use_recovery: "Sie haben viele Codes angefordert. Versuchen Sie es in einer Stunde erneut oder verwenden Sie einen Wiederherstellungscode.",
    nothing_to_send: "Diese Anmeldung verwendet eine Authentifizierungs-App; es gibt nichts zu senden.",
    no_tries_left: "Dieser Code hat nicht funktioniert, und für diese Anmeldung sind keine Versuche mehr übrig. Bitte melden Sie sich erneut an.",
    too_many_tries_heading: "Zu viele Versuche",
    too_many_tries: "Bei dieser Anmeldung wurden zu viele falsche Codes eingegeben. Bitte melden Sie sich erneut an.",
    sign_in_again_heading: "Bitte melden Sie sich erneut an",
    sign_in_ended: |mins| {
        format!(
            "Zu Ihrer Sicherheit ist dieser Anmeldeschritt beendet (er gilt {} und nur einmal).",
            minutes(mins)
        )
    },
    go_to_sign_in: "Zur Anmeldung",

    state_app: "Aktiviert — Authentifizierungs-App",
    state_email: |to| format!("Aktiviert — E-Mail an {to}"),
    state_off: "Deaktiviert",
    lead_app: |app, user| {
        format!(
            "Bei der Anmeldung an {app} als {user} wird ein Code aus Ihrer Authentifizierungs-App abgefragt."
        )
    },
    lead_email: |app, user| {
        format!(
            "Bei der Anmeldung an {app} als {user} wird ein Code abgefragt, den wir Ihnen per E-Mail senden."
        )
    },
    lead_off: |app| {
        format!(
            "Sichern Sie die Anmeldung an {app} mit einem zweiten Schritt: Nach dem Passwort geben Sie einen Code ein, den nur Sie erhalten."
        )
    },
    app_is_safer: "Eine Authentifizierungs-App ist sicherer als Codes per E-Mail.",
    switch_to_app: "Zur Authentifizierungs-App wechseln (empfohlen)",
    recovery_left: |n| format!("Verbleibende Wiederherstellungscodes: {n}"),
    change_heading: "Ändern",
    changes_need_code: "Änderungen erfordern einen aktuellen Code.",
    email_me_code: "Code per E-Mail senden",
    new_app: "Neue Authentifizierungs-App einrichten",
    email_instead: "Stattdessen Codes per E-Mail verwenden",
    new_codes_label: "Neue Wiederherstellungscodes — geben Sie einen aktuellen Code ein",
    new_codes_button: "Neue Wiederherstellungscodes erzeugen",
    disable_label: "Zum Deaktivieren geben Sie einen aktuellen Code oder einen Wiederherstellungscode ein",
    disable_button: "Zwei-Faktor-Authentifizierung deaktivieren",
    cannot_disable: "Ihre Organisation verlangt die Zwei-Faktor-Authentifizierung, daher kann sie nicht deaktiviert werden.",
    method_app_hint: "Zum Beispiel 1Password, Authy, LastPass Authenticator, Microsoft Authenticator oder Google Authenticator.",
    method_email_hint: "Wir senden Ihnen bei jeder Anmeldung einen Code per E-Mail. Weniger sicher als eine App.",
    back_to_account: "Zurück zu den Kontoeinstellungen",
    done_enabled: "Die Zwei-Faktor-Authentifizierung ist aktiviert.",
    done_disabled: "Die Zwei-Faktor-Authentifizierung ist deaktiviert.",
    done_codes: "Ihre neuen Wiederherstellungscodes sind bereit; die alten gelten nicht mehr.",
    must_enroll: "Ihre Organisation verlangt die Zwei-Faktor-Authentifizierung. Richten Sie sie ein, um fortzufahren.",
    current_code_failed: |tries| {
        then(
            "Ihr aktueller Code hat nicht funktioniert.",
            tries_left(tries),
        )
    },
    disable_failed: |tries| {
        then(
            "Dieser Code hat nicht funktioniert, daher bleibt die Zwei-Faktor-Authentifizierung aktiviert.",
            tries_left(tries),
        )
    },
    code_failed: |tries| then("Dieser Code hat nicht funktioniert.", tries_left(tries)),
    required_here: "Die Zwei-Faktor-Authentifizierung ist hier vorgeschrieben.",

    app_setup_heading: "Authentifizierungs-App einrichten",
    scan: "Scannen Sie diesen QR-Code mit Ihrer Authentifizierungs-App (1Password, Authy, LastPass Authenticator, Microsoft Authenticator, Google Authenticator).",
    qr_label: |app, user| format!("QR-Code für {app} ({user})"),
    cant_scan: "QR-Code lässt sich nicht scannen?",
    enter_key: "Geben Sie stattdessen diesen Schlüssel in Ihrer App ein (zeitbasiert, 6 Stellen):",
    account_issuer: |user, issuer| format!("Konto: {user} · Aussteller: {issuer}"),
    current_by_email: "Code, den wir Ihnen per E-Mail senden (oder ein Wiederherstellungscode)",
    current_by_app: "Code aus Ihrer bisherigen Authentifizierungs-App (oder ein Wiederherstellungscode)",
    enter_app_code: |app| {
        format!("Geben Sie den 6-stelligen Code ein, den Ihre App für {app} anzeigt")
    },
    email_me_change_code: "Code für diese Änderung per E-Mail senden",
    setup_expired: "Die Einrichtung hat zu lange gedauert, hier ist ein neuer QR-Code. Scannen Sie ihn erneut.",
    setup_wrong_code: "Dieser Code passt nicht. Prüfen Sie, ob Sie diesen QR-Code gescannt haben, und geben Sie den neuesten Code ein.",

    email_setup_heading: "Codes per E-Mail erhalten",
    email_sent: |digits, to, mins| {
        format!(
            "Wir haben einen {digits}-stelligen Code an {to} gesendet. Er läuft {} ab.",
            in_minutes(mins)
        )
    },
    current_by_method: "Code Ihrer bisherigen Methode (oder ein Wiederherstellungscode)",
    code_from_email: "Code aus der E-Mail",
    other_address: "Eine andere Adresse verwenden",
    email_is_weaker: "Codes per E-Mail sind weniger sicher als eine Authentifizierungs-App: E-Mail-Konten lassen sich leichter übernehmen, und NIST SP 800-63B erkennt E-Mail für eine starke Anmeldung nicht an. Wir empfehlen die App.",
    address_label: "E-Mail-Adresse",
    will_send_to: |to| format!("Wir senden die Codes an {to}."),
    send_code: "Code senden",
    send_failed_check_address: "Der Code konnte nicht gesendet werden. Prüfen Sie die Adresse und versuchen Sie es gleich noch einmal.",
    address_invalid: "Geben Sie eine E-Mail-Adresse wie name@example.com ein.",
    address_unknown: "Für Ihr Konto ist keine E-Mail-Adresse bekannt. Wenden Sie sich an Ihre Administration.",
    email_code_expired: "Dieser Code ist abgelaufen oder wurde zu oft falsch eingegeben. Fordern Sie einen neuen Code an.",
    email_wrong_code: "Dieser Code passt nicht oder ist abgelaufen. Prüfen Sie die neueste E-Mail oder fordern Sie einen neuen Code an.",

    codes_heading: "Sichern Sie Ihre Wiederherstellungscodes",
    codes_lead: "Wenn Sie Ihr Telefon verlieren, können Sie sich mit jedem dieser Codes einmal anmelden. Bewahren Sie sie sicher auf, etwa in einem Passwort-Manager. Sie werden nicht noch einmal angezeigt.",
    codes_download: "Als .txt herunterladen",
    codes_saved: "Ich habe sie gesichert",
    codes_replaced: "Ihre alten Wiederherstellungscodes gelten nicht mehr.",
    codes_file: |app, user| {
        format!(
            "Wiederherstellungscodes für {app} ({user})\r\nMit jedem Code können Sie sich einmal anmelden, wenn Sie Ihre Authentifizierungs-App verlieren."
        )
    },

    trouble,
    error_status: |status| format!("Fehler {status}"),
    locked_heading: "Zu viele falsche Codes",
    locked: |secs| {
        format!(
            "Zum Schutz Ihres Kontos ist die Anmeldung nach mehreren falschen Codes angehalten. {}",
            try_again_in(secs)
        )
    },
    try_again_in,

    api_not_found: "Diesen API-Endpunkt gibt es nicht.",
    api_sign_in_first: "Melden Sie sich zuerst an.",
    api_sign_in_again: "Melden Sie sich erneut an.",
    api_email_unavailable: "Codes per E-Mail werden hier nicht angeboten.",
    api_one_code: "Codes sind Zeichenketten, ein Code pro Anfrage.",
    api_wrong_code: "Dieser Code hat nicht funktioniert.",
    api_address_invalid: "Senden Sie {\"address\": \"name@example.com\"}.",
    api_address_unknown: "Für dieses Konto ist keine E-Mail-Adresse bekannt.",
    api_not_enabled: "Die Zwei-Faktor-Authentifizierung ist deaktiviert.",
    api_try_again: "Versuchen Sie es erneut.",
    api_setup_expired: "Die Einrichtung ist abgelaufen; beginnen Sie sie erneut.",
    api_ask_again_in: |s| format!("Fordern Sie {} erneut einen Code an.", in_seconds(s)),
    api_many_codes: "Zu viele Codes in dieser Stunde.",
    api_send_failed: "Der Code konnte nicht gesendet werden; versuchen Sie es erneut.",
    body_too_large: "Der Inhalt der Anfrage ist zu groß.",
    body_cross_site: "Anfragen von anderen Websites werden abgelehnt.",
    body_unreadable: "Der Inhalt der Anfrage konnte so nicht gelesen werden.",
    body_late: "Der Inhalt der Anfrage kam nicht rechtzeitig an.",

    code_mail,
    notice_mail,

    outbox_heading: "Demo-Postausgang",
    outbox_lead: "Die Demo versendet keine echten E-Mails: Codes und Hinweise landen hier (neueste zuerst) und in der Konsole. Diese Seite gibt es nur in der Demo.",
    outbox_empty: "Noch keine E-Mails.",
    outbox_to: |to| format!("An {to}"),
};
