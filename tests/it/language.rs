//! The words follow the reader: `Accept-Language` picks the catalogue for pages and JSON
//! messages, the operator can pin one, and mails sent later go out in the language 2FA was
//! enabled in. The JSON error codes never change with the language.

use crate::support::agent::{Agent, input_value};
use crate::support::site::*;
use crate::support::*;

const GERMAN: &str = "de-CH, de;q=0.9, en;q=0.5";
const ADMIN_TOKEN: &str = "language-test-admin-token-of-32-chars-or-more";

fn manual_key(html: &str) -> String {
    html.split("id=\"manual-key\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .replace(' ', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_browser_reads_german_pages_messages_and_mails() {
    let site = site(
        Backend::Memory,
        &[
            ("TWOFA_EMAIL__TRANSPORT", "log"),
            ("TWOFA_SECRETS__ADMIN_TOKEN", ADMIN_TOKEN),
        ],
    )
    .await;
    let mut agent = Agent::new(site.proxy.addr);
    agent.accept_language = Some(GERMAN);
    password_login(&mut agent, "alice", "wonderland").await;

    let answer = agent.get("/_2fa/settings").await;
    // The words followed the header: no cache may hand this page to another reader.
    assert_eq!(answer.header("vary"), Some("accept-language"));
    let settings = answer.text();
    assert!(settings.contains("<html lang=\"de\">"), "{settings}");
    for words in [
        "Zwei-Faktor-Authentifizierung aktivieren",
        "Methode 1 (empfohlen): Einrichtung mit einer Authentifizierungs-App",
        ">Weiter<",
    ] {
        assert!(settings.contains(words), "{words:?} missing:\n{settings}");
    }
    assert!(!settings.contains("Two Factor Authentication"));

    let setup = agent.get("/_2fa/settings/totp").await.text();
    assert!(setup.contains(">Bestätigen<"), "{setup}");
    assert_eq!(manual_key(&setup).len(), 32, "{setup}");
    let csrf = input_value(&setup, "csrf");
    let wrong = agent
        .post_form(
            "/_2fa/settings/totp",
            &[("csrf", &csrf), ("code", "000000")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(
        wrong.text().contains("Dieser Code passt nicht."),
        "{}",
        wrong.text()
    );

    // Enrolling by email: the confirmation mail is German like the page that asked for it.
    let page = agent
        .post_form(
            "/_2fa/settings/email",
            &[
                ("csrf", &csrf),
                ("action", "send"),
                ("address", "alice@example.com"),
            ],
        )
        .await
        .text();
    assert!(
        page.contains("Wir haben einen 6-stelligen Code an"),
        "{page}"
    );
    let mut reader = Agent::new(site.proxy.addr);
    let outbox = wait_for_outbox(&mut reader, "Ihr Code lautet ").await;
    let code: String = outbox
        .split("Ihr Code lautet ")
        .nth(1)
        .unwrap()
        .chars()
        .take(6)
        .collect();
    let done = agent
        .post_form(
            "/_2fa/settings/email",
            &[("csrf", &csrf), ("action", "verify"), ("code", &code)],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(
        done.text()
            .contains("Sichern Sie Ihre Wiederherstellungscodes")
    );

    // JSON messages too; the codes beside them stay the same for programs.
    let api = agent
        .post_json("/_2fa/api/v1/nope", serde_json::json!({}))
        .await;
    assert_eq!(api.status, 404);
    let body: serde_json::Value = serde_json::from_str(&api.text()).unwrap();
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "Diesen API-Endpunkt gibt es nicht.");

    // The "enabled" notice went out in German, and so does a mail sent with no request behind
    // it: the admin reset, in the language 2FA was enabled in.
    let reset = send(
        http::Request::post(format!(
            "http://{}/admin/v1/users/alice/reset-2fa",
            site.proxy.admin_addr
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(full(""))
        .unwrap(),
    )
    .await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    let outbox = wait_for_outbox(&mut reader, "zurückgesetzt").await;
    assert!(
        outbox.contains("Zwei-Faktor-Authentifizierung ist aktiviert"),
        "{outbox}"
    );
    // The outbox page itself follows its own reader: English here.
    assert!(outbox.contains("Demo outbox"), "{outbox}");
    assert!(
        !outbox.contains("Two Factor Authentication is enabled"),
        "{outbox}"
    );
}

/// The outbox page once it shows `text` (mails are sent in the background).
async fn wait_for_outbox(agent: &mut Agent, text: &str) -> String {
    for _ in 0..100 {
        let page = agent.get("/_2fa/outbox").await.text();
        if page.contains(text) {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no mail with {text:?} arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_pin_the_language() {
    for (pin, lang, heading) in [
        ("en", "en", "Two Factor Authentication"),
        ("de", "de", "Zwei-Faktor-Authentifizierung"),
    ] {
        let site = site(Backend::Memory, &[("TWOFA_UI__LANGUAGE", pin)]).await;
        for asked in [Some(GERMAN), Some("en-US"), None] {
            let mut agent = Agent::new(site.proxy.addr);
            agent.accept_language = asked;
            password_login(&mut agent, "alice", "wonderland").await;
            let page = agent.get("/_2fa/settings").await.text();
            assert!(
                page.contains(&format!("<html lang=\"{lang}\">")) && page.contains(heading),
                "pinned {pin}, asked {asked:?}:\n{page}"
            );
        }
    }
}

/// Refusals on the forwarding path (no session, an unreadable request) speak the reader's
/// language too, though the request was read only by the gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_the_forwarding_path_follow_the_reader() {
    let site = site(Backend::Memory, &[]).await;
    let url = format!("http://{}/api/orders", site.proxy.addr);
    let res = get(&url, &[("accept-language", GERMAN)]).await;
    assert_eq!(res.status, 401);
    let body: serde_json::Value = serde_json::from_str(&res.text()).unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["message"], "Melden Sie sich zuerst an.");
    assert_eq!(res.header("vary"), Some("accept-language"));

    let res = get(&url, &[("accept-language", "fr, en;q=0.1")]).await;
    let body: serde_json::Value = serde_json::from_str(&res.text()).unwrap();
    assert_eq!(body["message"], "Sign in first.");

    let page = get(
        &format!("http://{}/a/%zz", site.proxy.addr),
        &[("accept", "text/html"), ("accept-language", GERMAN)],
    )
    .await;
    assert_eq!(page.status, 400);
    assert!(
        page.text().contains("Anfrage nicht verstanden"),
        "{}",
        page.text()
    );
}
