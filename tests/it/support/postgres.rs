//! A private PostgreSQL server (Debian's binaries) in a temporary folder on a free loopback
//! port, for tests that stop and restart it. Never the machine's shared server on 5432.
//! PostgreSQL refuses to run as root: run as root (CI), the server runs as the `postgres` user.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, missing_tool};

const INSTALL: &str = "apt-get install postgresql";

pub struct PostgresServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    bin: PathBuf,
    data: PathBuf,
    owner: Option<(u32, u32)>,
    /// The server's certificate and key, when it speaks TLS.
    tls: Option<(PathBuf, PathBuf)>,
    _dir: TempDir,
}

/// Debian keeps the server binaries per major version, off PATH.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("postgres").is_file() && bin.join("initdb").is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| missing_tool("postgres", INSTALL, "no /usr/lib/postgresql/*/bin"))
}

/// The `postgres` user's uid and gid when this process is root; none otherwise (the server
/// then runs as the current user).
fn owner() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let out = Command::new("id").args(args).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"])? != 0 {
        return None;
    }
    Some((
        id(&["-u", "postgres"]).unwrap_or_else(|| {
            missing_tool("the postgres user", INSTALL, "run as root without it")
        }),
        id(&["-g", "postgres"]).unwrap_or_else(|| {
            missing_tool("the postgres group", INSTALL, "run as root without it")
        }),
    ))
}

fn command(bin: &Path, program: &str, owner: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(bin.join(program));
    if let Some((uid, gid)) = owner {
        c.uid(uid).gid(gid);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    c
}

impl PostgresServer {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that also speaks TLS, with a self-signed certificate for localhost and
    /// 127.0.0.1 (its PEM is [`Self::ca_file`]).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    pub fn ca_file(&self) -> &Path {
        &self.tls.as_ref().unwrap().0
    }

    fn start_with(tls: bool) -> Self {
        let bin = bin_dir();
        let owner = owner();
        let dir = TempDir::new("postgres");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path("data");
        let status = command(&bin, "initdb", owner)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&data)
            .status()
            .unwrap_or_else(|e| missing_tool("initdb", INSTALL, e));
        assert!(status.success(), "initdb failed: {status}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tls = tls.then(|| {
            let (cert, key) = super::self_signed(&dir.0);
            // The server refuses a key others can read; it must own it.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&key, Some(uid), Some(gid)).unwrap();
            }
            // TLS only over TCP, so a test that connects proves it spoke TLS.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            (cert, key)
        });
        let mut server = Self {
            child: None,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            bin,
            data,
            owner,
            tls,
            _dir: dir,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let socket_dir = self.data.parent().unwrap().to_owned();
        let mut postgres = command(&self.bin, "postgres", self.owner);
        if let Some((cert, key)) = &self.tls {
            postgres.args(["-c", "ssl=on"]);
            postgres
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()));
            postgres
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        let child = postgres
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.addr.port().to_string()])
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            // The server's log, for a failing test to look at: it is noisy on stderr.
            .stderr(std::fs::File::create(self.data.with_extension("log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| missing_tool("postgres", INSTALL, e));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.accepts_queries() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server answers on its port (not only listens: it refuses during startup).
    fn accepts_queries(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-U", "postgres", "-h", "127.0.0.1"])
            .args(["-p", &self.addr.port().to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A URL for database `db` of this server, created if missing.
    pub fn url(&self, db: &str) -> String {
        let sslmode = if self.tls.is_some() {
            "require"
        } else {
            "disable"
        };
        let status = command(&self.bin, "createdb", None)
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(["-U", "postgres", db])
            .status()
            .unwrap();
        // Already there is fine: the tests reuse names only on purpose.
        let _ = status;
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode={sslmode}",
            self.addr.port()
        )
    }

    /// Stops the server the way an orchestrator does (SIGINT: fast shutdown, every connection
    /// closed); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}
