//! A real SMTP server process (Python's aiosmtpd, `smtp_sink.py`) on a free loopback port; the
//! tests read what it received. It can be stopped and restarted to test delivery failures.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, missing_tool};

pub struct SmtpSink {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    tls: Option<(PathBuf, PathBuf)>,
    extra: Vec<String>,
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// STARTTLS required, with this certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(Some((cert.to_owned(), key.to_owned())))
    }

    /// Implicit TLS (no STARTTLS), with this certificate and key, and AUTH with `user:password`.
    pub fn start_implicit_tls_with_auth(cert: &Path, key: &Path, credentials: &str) -> Self {
        Self::start_full(
            Some((cert.to_owned(), key.to_owned())),
            vec!["--implicit".into(), "--auth".into(), credentials.into()],
        )
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Self {
        Self::start_full(tls, Vec::new())
    }

    fn start_full(tls: Option<(PathBuf, PathBuf)>, extra: Vec<String>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sink = Self {
            child: None,
            port,
            dir: TempDir::new("smtp"),
            tls,
            extra,
        };
        sink.spawn();
        sink
    }

    fn spawn(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/smtp_sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &self.port.to_string(), "--dir"])
            .arg(&self.dir.0);
        if let Some((cert, key)) = &self.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        cmd.args(&self.extra);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| missing_tool("python3", "apt-get install python3", e));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            missing_tool(
                "aiosmtpd",
                "python3 -m pip install aiosmtpd",
                format_args!("the SMTP sink did not start: {line:?}, its error above"),
            );
        }
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Every message received so far, oldest first, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir.0)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Waits (bounded) until `count` messages have arrived; returns the newest.
    pub fn wait_for(&self, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.messages();
            if all.len() >= count {
                return all[count - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} messages, got {}",
                all.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The code in a code email ("Your code is 123456").
pub fn code_in(message: &str) -> String {
    let start = message
        .find("Your code is ")
        .unwrap_or_else(|| panic!("no code in:\n{message}"))
        + 13;
    message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}
