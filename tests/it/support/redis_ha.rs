//! Replicated Redis on loopback, for the store's Sentinel and Cluster tests: private
//! `redis-server` processes (data nodes, and `--sentinel` ones) on free ports, each in a
//! temporary directory, killed when the value drops. Every wait is bounded.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, missing_tool};

/// Arguments that keep a node from being turned into a replica.
const UNDEMOTABLE: [&str; 6] = [
    "--rename-command",
    "REPLICAOF",
    "",
    "--rename-command",
    "SLAVEOF",
    "",
];

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server` process.
struct Node {
    child: Option<Child>,
    port: u16,
}

impl Node {
    fn start(dir: &TempDir, port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| missing_tool("redis-server", "apt-get install redis-server", e));
        wait_until(Duration::from_secs(10), &format!("redis on {port}"), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            child: Some(child),
            port,
        }
    }

    /// kill -9: no shutdown, no goodbye to the replicas or the sentinels.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn data_args(port: u16) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// 1 master, 1 replica and 3 sentinels (quorum 2, down after 1 s).
pub struct RedisSentinel {
    dir: TempDir,
    master: Node,
    replica: Node,
    sentinels: Vec<Node>,
    /// The port the first master had (it may be a replica, or dead, after a failover).
    pub first_master: u16,
}

impl RedisSentinel {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With `extra` on every data node's command line (an ACL user, say).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(extra, &[])
    }

    /// With a first master that no sentinel can turn into a replica (REPLICAOF renamed
    /// away): after a failover it stays a master that accepts writes.
    pub fn start_undemotable() -> Self {
        Self::start_inner(&[], &UNDEMOTABLE)
    }

    fn start_inner(extra: &[&str], master_extra: &[&str]) -> Self {
        let dir = TempDir::new("sentinel");
        let master_port = free_port();
        let mut args = data_args(master_port);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args.extend(master_extra.iter().map(|a| (*a).to_owned()));
        let master = Node::start(&dir, master_port, &as_strs(&args));
        let replica_port = free_port();
        let mut args = data_args(replica_port);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args.extend(["--replicaof", "127.0.0.1", &master_port.to_string()].map(str::to_owned));
        let replica = Node::start(&dir, replica_port, &as_strs(&args));
        let sentinels = (0..3)
            .map(|i| {
                let port = free_port();
                let conf = dir.path(&format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = dir.0.display()
                    ),
                )
                .unwrap();
                Node::start(&dir, port, &[conf.to_str().unwrap(), "--sentinel"])
            })
            .collect::<Vec<_>>();
        let me = Self {
            dir,
            master,
            replica,
            sentinels,
            first_master: master_port,
        };
        me.wait_ready();
        me
    }

    /// Until the replica has synced and every sentinel knows the replica and the two other
    /// sentinels: before that a failover cannot be agreed on.
    fn wait_ready(&self) {
        let replica = self.replica.port;
        wait_until(Duration::from_secs(20), "replica in sync", || {
            info(replica, "replication").contains("master_link_status:up")
        });
        for s in &self.sentinels {
            let port = s.port;
            wait_until(Duration::from_secs(20), "sentinels see each other", || {
                let q = |what: &str| -> usize {
                    query::<Vec<::redis::Value>>(port, &["SENTINEL", what, MASTER_NAME])
                        .map(|v| v.len())
                        .unwrap_or(0)
                };
                q("SENTINELS") == 2 && q("REPLICAS") == 1
            });
        }
    }

    /// `host:port` of each sentinel, for `[store] sentinels`.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port as the first sentinel sees it now.
    pub fn master_port(&self) -> Option<u16> {
        let addr: Vec<String> = query(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    }

    /// Blocks until the replica has every write the master has, so a failover loses none.
    pub fn sync_replica(&self) {
        sync_replicas_of(self.master.port);
    }

    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// SIGSTOP / SIGCONT of the first master: to the sentinels it is gone, but its connections
    /// stay open, as across a network partition.
    pub fn freeze_master(&self, frozen: bool) {
        let pid = self.master.child.as_ref().unwrap().id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap_or_else(|e| missing_tool("kill", "apt-get install procps", e));
        assert!(ok.success());
    }

    /// Starts a new, empty master on the first master's port, that no sentinel can turn into
    /// a replica (REPLICAOF renamed away): the node a pinned client would write to.
    pub fn restart_old_master_empty(&mut self) {
        self.master.kill();
        let mut args = data_args(self.first_master);
        args.extend(UNDEMOTABLE.map(str::to_owned));
        self.master = Node::start(&self.dir, self.first_master, &as_strs(&args));
    }

    /// `SENTINEL FAILOVER`: the sentinels promote the replica without waiting for a failure.
    pub fn ask_failover(&self) -> ::redis::RedisResult<()> {
        query(
            self.sentinels[0].port,
            &["SENTINEL", "FAILOVER", MASTER_NAME],
        )
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(port: u16) -> i64 {
        query(port, &["DBSIZE"]).unwrap()
    }

    pub fn replica_port(&self) -> u16 {
        self.replica.port
    }
}

/// A Redis Cluster of `masters` masters with `replicas` replicas each, made by
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    _dir: TempDir,
    nodes: Vec<Node>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = TempDir::new("cluster");
        let count = masters * (1 + replicas);
        let nodes: Vec<Node> = (0..count)
            .map(|_| {
                let port = free_cluster_port();
                let mut args = data_args(port);
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(str::to_owned),
                );
                Node::start(&dir, port, &as_strs(&args))
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| missing_tool("redis-cli", "apt-get install redis-tools", e));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let me = Self { _dir: dir, nodes };
        for n in &me.nodes {
            let port = n.port;
            wait_until(Duration::from_secs(30), "cluster_state:ok", || {
                query::<String>(port, &["CLUSTER", "INFO"])
                    .is_ok_and(|i| i.contains("cluster_state:ok"))
            });
            if info(port, "replication").contains("role:slave") {
                // A replica that never synced refuses to fail over.
                wait_until(Duration::from_secs(30), "replica in sync", || {
                    info(port, "replication").contains("master_link_status:up")
                });
            }
        }
        me
    }

    /// `host:port` of every node, for `[store] nodes`.
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let any = self.nodes.iter().find(|n| n.child.is_some()).unwrap().port;
        let slot: i64 = query(any, &["CLUSTER", "KEYSLOT", key]).unwrap();
        // CLUSTER SHARDS would say it directly; SLOTS exists on every 7.0 server.
        let slots: Vec<::redis::Value> = query(any, &["CLUSTER", "SLOTS"]).unwrap();
        for range in slots {
            let ::redis::Value::Array(items) = range else {
                continue;
            };
            let (Some(::redis::Value::Int(lo)), Some(::redis::Value::Int(hi))) =
                (items.first(), items.get(1))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&slot)
                && let Some(::redis::Value::Array(master)) = items.get(2)
                && let Some(::redis::Value::Int(port)) = master.get(1)
            {
                return u16::try_from(*port).unwrap();
            }
        }
        panic!("no master serves slot {slot}");
    }

    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap()
            .kill();
    }

    /// How many keys the node on `port` holds.
    pub fn dbsize(port: u16) -> i64 {
        query(port, &["DBSIZE"]).unwrap()
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One command on a fresh connection to the server on `port`.
pub fn query<T: ::redis::FromRedisValue>(port: u16, args: &[&str]) -> ::redis::RedisResult<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let mut cmd = ::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
}

/// Blocks until every replica of the master on `port` has applied all the master has (their
/// replication offsets caught up), so a failover loses no write made before. (`WAIT` on a new
/// connection proves nothing: it waits for that connection's own writes only.)
pub fn sync_replicas_of(port: u16) {
    wait_until(Duration::from_secs(10), "replicas caught up", || {
        let master = info(port, "replication");
        let field = |text: &str, name: &str| -> Option<i64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let Some(offset) = field(&master, "master_repl_offset:") else {
            return false;
        };
        let replicas: Vec<u16> = master
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("port="))
            .filter_map(|l| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix("port="))
                    .and_then(|p| p.parse().ok())
            })
            .collect();
        !replicas.is_empty()
            && replicas.iter().all(|r| {
                let replica = info(*r, "replication");
                replica.contains("master_link_status:up")
                    && field(&replica, "slave_repl_offset:").is_some_and(|o| o >= offset)
            })
    });
}

/// "master" or "slave", as the node on `port` says (`ROLE`); empty if it does not answer.
pub fn role(port: u16) -> String {
    query::<Vec<::redis::Value>>(port, &["ROLE"])
        .ok()
        .and_then(|v| match v.first() {
            Some(::redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
            _ => None,
        })
        .unwrap_or_default()
}

fn info(port: u16, section: &str) -> String {
    query(port, &["INFO", section]).unwrap_or_default()
}

fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port whose cluster bus port (+10000) is free too, both below the ephemeral range (so no
/// outgoing connection takes one meanwhile): at most 22767.
fn free_cluster_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for attempt in 0..200u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = 12_000 + (h.finish() % 10_768) as u16;
        let free = |p: u16| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], p))).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair below 22768");
}
