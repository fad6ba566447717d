//! Real processes for the fault suite: nats-servers (one, or three clustered over routes;
//! `herald_testkit::nats`) and `herald` children started from the built binary with
//! `HERALD_*` variables. Every wait polls with a deadline; every process is killed when its
//! handle is dropped.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

pub use herald_testkit::{
    free_port,
    nats::{child_output, kill_child, NatsCluster, NatsNode},
    poll_until as eventually,
};

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
