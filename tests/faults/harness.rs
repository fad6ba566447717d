//! Real processes for the fault suite: nats-servers (one, or three clustered over routes,
//! each with JetStream, its own temporary store and random loopback ports) and `herald`
//! children started from the built binary with `HERALD_*` variables. Every wait polls with
//! a deadline; every process is killed when its handle is dropped.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use async_nats::jetstream;

pub use crate::common::{free_port, nats_server_bin, poll_until as eventually};

/// Child output goes to the test's stderr with `TEST_LOG` set, nowhere otherwise.
fn child_output() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

fn kill_child(child: &mut Option<Child>) {
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
    eventually(
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
        eventually(
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

/// Herald settings every fault test uses: loopback receivers allowed, retry "seconds" of
/// 20 ms, one-second attempts.
pub fn base_env(nats_url: &str) -> Vec<(String, String)> {
    [
        ("HERALD_NATS_URL", nats_url),
        ("HERALD_OUTBOUND_ALLOW", "127.0.0.0/8"),
        ("HERALD_RETRY_DELAY_UNIT_MS", "20"),
        ("HERALD_DELIVERY_TIMEOUT_MS", "1000"),
        ("HERALD_NATS_TIMEOUT_MS", "2000"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The real `herald` binary as a child process.
pub struct Herald {
    pub port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Herald {
    /// Starts `herald serve` with `env` (plus its listen address) and waits for `/readyz`.
    pub async fn start(env: Vec<(String, String)>) -> Self {
        let mut herald = Self {
            port: free_port(),
            env,
            child: None,
        };
        herald.launch().await;
        herald
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HERALD_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("HERALD_PUBLIC_URL", self.base_url())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(std::env::var("RUST_LOG").ok().map(|v| ("RUST_LOG", v)))
            .stdout(child_output())
            .stderr(child_output())
            .spawn()
            .expect("the herald binary runs");
        self.child = Some(child);
        let url = format!("{}/readyz", self.base_url());
        let http = reqwest::Client::new();
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(50),
            "herald to be ready",
            || {
                let (url, http) = (url.clone(), http.clone());
                async move {
                    let r = http.get(url).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
    }

    /// SIGKILL mid-work, as a crash would.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// SIGTERM, then waits (bounded) for the graceful exit; returns whether it exited 0.
    pub async fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts again on the same port with the same settings.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        self.kill();
    }
}
