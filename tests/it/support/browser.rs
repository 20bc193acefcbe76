//! A headless Chromium driven over WebDriver: `chromedriver` as a child process on a free
//! loopback port, a fantoccini session with a fresh profile, and small bounded helpers.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`);
//! a test that starts a `Browser` without them fails with a message saying so.

use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fantoccini::elements::Element;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{TempDir, missing_tool};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long a single WebDriver command, or a wait for a page state, may take.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long chromedriver may take to answer and the browser session to open.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One headless Chromium session. Dropping it kills chromedriver and the browser it started.
pub struct Browser {
    client: Client,
    driver: Child,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and opens a session, or fails the test saying what is missing.
    pub async fn start() -> Self {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            if !Path::new(path).exists() {
                missing_tool(
                    package,
                    "apt-get install chromium chromium-driver",
                    format_args!("no {path}"),
                );
            }
        }

        let port = free_port();
        let profile = TempDir::new("chromium");
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so dropping the browser can end chromedriver and every
            // Chromium process it started in one signal.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {CHROMEDRIVER}: {e}"));
        let webdriver = format!("http://127.0.0.1:{port}");

        if let Err(problem) = wait_until_answering(&webdriver, &mut driver).await {
            kill_group(&mut driver);
            panic!("chromedriver at {webdriver} did not come up: {problem}");
        }

        let mut caps = Capabilities::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert(
            "timeouts".into(),
            serde_json::json!({
                "pageLoad": STEP_TIMEOUT.as_millis() as u64,
                "script": STEP_TIMEOUT.as_millis() as u64,
                "implicit": 0,
            }),
        );
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.0.display()),
                ],
            }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let client = match tokio::time::timeout(START_TIMEOUT, builder.connect(&webdriver)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                kill_group(&mut driver);
                panic!("chromedriver could not open a Chromium session: {e}");
            }
            Err(_) => {
                kill_group(&mut driver);
                panic!("no Chromium session within {START_TIMEOUT:?}");
            }
        };

        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// The fantoccini client, for anything the helpers below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the page load.
    pub async fn goto(&self, url: &str) {
        step(&format!("goto {url}"), self.client.goto(url)).await;
    }

    /// The address the browser shows now.
    pub async fn current_url(&self) -> String {
        step("current url", self.client.current_url())
            .await
            .to_string()
    }

    /// The first element matching `css`, failing at once when there is none.
    pub async fn find(&self, css: &str) -> Element {
        step(&format!("find {css}"), self.client.find(Locator::Css(css))).await
    }

    /// Replaces the value of the input matching `css` with `text`, typed as keys.
    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.wait_for(css).await;
        step(&format!("clear {css}"), input.clear()).await;
        step(&format!("type into {css}"), input.send_keys(text)).await;
    }

    /// Clicks the element matching `css` (waiting for it to appear first).
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        step(&format!("click {css}"), element.click()).await;
    }

    /// Clicks the link whose text is exactly `text` (waiting for it to appear first).
    pub async fn click_link(&self, text: &str) {
        let found = self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .every(Duration::from_millis(50))
            .for_element(Locator::LinkText(text));
        let link = step(&format!("wait for link {text:?}"), found).await;
        step(&format!("click link {text:?}"), link.click()).await;
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        step(&format!("text of {css}"), element.text()).await
    }

    /// An attribute of the element matching `css`, as written in the page.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.wait_for(css).await;
        step(&format!("{name} of {css}"), element.attr(name)).await
    }

    /// Waits up to [`STEP_TIMEOUT`] for an element matching `css`.
    pub async fn wait_for(&self, css: &str) -> Element {
        self.wait_for_within(css, STEP_TIMEOUT).await
    }

    /// Waits up to `limit` for an element matching `css`.
    pub async fn wait_for_within(&self, css: &str, limit: Duration) -> Element {
        let found = self
            .client
            .wait()
            .at_most(limit)
            .every(Duration::from_millis(50))
            .for_element(Locator::Css(css));
        step(&format!("wait for {css}"), found).await
    }

    /// Waits up to [`STEP_TIMEOUT`] until the element matching `css` shows `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Ok(element)) =
                tokio::time::timeout(STEP_TIMEOUT, self.client.find(Locator::Css(css))).await
            {
                // The page may navigate between finding and reading: try again.
                if let Ok(Ok(text)) = tokio::time::timeout(STEP_TIMEOUT, element.text()).await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let url = self.current_url().await;
        panic!("{css} never showed {needle:?} within {STEP_TIMEOUT:?} (at {url}); last: {last:?}");
    }

    /// Waits up to [`STEP_TIMEOUT`] until the current URL satisfies `want`; returns it.
    pub async fn wait_for_url(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.wait_for_url_within(what, STEP_TIMEOUT, want).await
    }

    /// Waits up to `limit` until the current URL satisfies `want` (described by `what`).
    pub async fn wait_for_url_within(
        &self,
        what: &str,
        limit: Duration,
        want: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let url = self.current_url().await;
            if want(&url) {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the URL never became {what} within {limit:?}; it is {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the current URL's path is `path` (query and fragment ignored).
    pub async fn wait_for_path(&self, path: &str) -> String {
        self.wait_for_url(&format!("a URL with path {path}"), |url| {
            url_path(url) == path
        })
        .await
    }

    /// Saves a PNG of the viewport as `<target dir>/screenshots/<name>.png`; returns its path.
    /// Fills and submits the demo app's login form (the browser is on it).
    pub async fn sign_in(&self, user: &str, password: &str) {
        self.fill("#username", user).await;
        self.fill("#password", password).await;
        self.click("form[action='/login'] button[type='submit']")
            .await;
    }

    /// A screenshot whose path goes to the test output, for reviewers.
    pub async fn shot(&self, name: &str) {
        eprintln!("screenshot: {}", self.screenshot(name).await.display());
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = step(&format!("screenshot {name}"), self.client.screenshot()).await;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
        path
    }

    /// Ends the WebDriver session cleanly (Chromium quits); the drop then ends chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(STEP_TIMEOUT, self.client.clone().close()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}

/// Where screenshots go: `screenshots/` in the cargo target directory in use.
pub fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

/// The path part of an absolute URL.
pub fn url_path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("/", |at| &after_scheme[at..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// Runs one WebDriver command, failing the test on an error or after [`STEP_TIMEOUT`].
async fn step<T, E: std::fmt::Display>(what: &str, fut: impl Future<Output = Result<T, E>>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(value)) => value,
        Ok(Err(e)) => panic!("browser: {what} failed: {e}"),
        Err(_) => panic!("browser: {what} took longer than {STEP_TIMEOUT:?}"),
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("no free port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

/// Polls chromedriver's `/status` until it answers 200, it exits, or [`START_TIMEOUT`] passes.
async fn wait_until_answering(webdriver: &str, driver: &mut Child) -> Result<(), String> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(HttpConnector::new());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = driver.try_wait() {
            return Err(format!("chromedriver exited with {status}"));
        }
        let req = Request::get(format!("{webdriver}/status"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        if let Ok(Ok(res)) = tokio::time::timeout(Duration::from_secs(2), client.request(req)).await
            && res.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no answer within {START_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ends chromedriver and everything in its process group (the Chromium it started).
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}
