//! A scripted browser over HTTP: a cookie jar, no automatic redirects, form and JSON posts.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, header};

use super::{Answer, full, send};

pub struct Agent {
    pub base: String,
    pub cookies: BTreeMap<String, String>,
    /// Sent as `Accept-Language` when set.
    pub accept_language: Option<&'static str>,
}

impl Agent {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            base: format!("http://{addr}"),
            cookies: BTreeMap::new(),
            accept_language: None,
        }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn remember(&mut self, answer: &Answer) {
        for v in answer.headers.get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let attrs = attrs.to_ascii_lowercase();
            if value.is_empty() || attrs.contains("max-age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8");
        if let Some(c) = self.cookie_header() {
            req = req.header(header::COOKIE, c);
        }
        if let Some(l) = self.accept_language {
            req = req.header(header::ACCEPT_LANGUAGE, l);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let answer = send(req.body(full(body)).unwrap()).await;
        self.remember(&answer);
        answer
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.request("GET", path, None, Bytes::new()).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            Bytes::from(body),
        )
        .await
    }

    pub async fn post_json(&mut self, path: &str, value: serde_json::Value) -> Answer {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Bytes::from(value.to_string()),
        )
        .await
    }

    /// The demo app's JSON login.
    pub async fn json_login(&mut self, user: &str, password: &str) -> Answer {
        self.post_json(
            "/api/login",
            serde_json::json!({ "username": user, "password": password }),
        )
        .await
    }

    /// Follows `Location` from a redirect answer with a GET.
    pub async fn follow(&mut self, answer: &Answer) -> Answer {
        let location = answer
            .header("location")
            .unwrap_or_else(|| panic!("no Location in {}", answer.status));
        let location = location
            .strip_prefix(&self.base)
            .unwrap_or(location)
            .to_owned();
        self.get(&location).await
    }
}

/// The value of `<input name="NAME" value="...">` in an HTML page.
pub fn input_value(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}
