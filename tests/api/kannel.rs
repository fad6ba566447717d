//! A real Kannel SMS gateway for SMS delivery tests: `bearerbox` and `smsbox` from
//! `/usr/sbin` with a generated `kannel.conf` in a temporary directory, on free loopback
//! ports. Its SMSC is Kannel's `loopback` type, which turns every sent (MT) message back
//! into a received (MO) one; the `default` sms-service hands each MO to an axum receiver in
//! the test (`MoReceiver`) and sends no reply SMS (`max-messages = 0`), so nothing loops.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{extract::State, http::Uri, routing::get, Router};

use crate::helpers::{eventually, free_port};

pub const BEARERBOX: &str = "/usr/sbin/bearerbox";
pub const SMSBOX: &str = "/usr/sbin/smsbox";
pub const KANNEL_USER: &str = "herald";
pub const KANNEL_PASSWORD: &str = "kannel-s3cret";
/// Receivers under this prefix are refused by the sendsms-user's black list (Kannel
/// answers 400).
pub const BLACKLISTED_PREFIX: &str = "+999";

/// One SMS as Kannel handed it to the sms-service: the MO the loopback SMSC made of an MT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mo {
    /// `%p`: with Kannel 1.4.5's loopback SMSC, the MT's sender (`from`).
    pub from: String,
    /// `%P`: the MT's receiver (the subscriber's number).
    pub to: String,
    /// `%b` decoded with `%C` (UTF-16BE for UCS-2, else UTF-8).
    pub text: String,
    /// `%c`: 0 = GSM-7, 2 = UCS-2.
    pub coding: String,
}

/// The axum endpoint Kannel's sms-service `get-url` calls.
pub struct MoReceiver {
    pub port: u16,
    received: Arc<Mutex<Vec<Mo>>>,
    task: tokio::task::JoinHandle<()>,
}

/// `application/x-www-form-urlencoded` to bytes: `%b` is the raw message octets (UTF-16BE
/// for UCS-2), which a `str`-based decoder would mangle.
fn form_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ASCII escape");
                out.push(u8::from_str_radix(hex, 16).expect("a %XX escape"));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

async fn receive_mo(State(received): State<Arc<Mutex<Vec<Mo>>>>, uri: Uri) -> &'static str {
    let mut fields = std::collections::HashMap::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        fields.insert(k.to_owned(), form_bytes(v));
    }
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let utf8 = |k: &str| String::from_utf8(field(k)).expect("UTF-8 field");
    let raw = field("text");
    let text = if utf8("charset").eq_ignore_ascii_case("UTF-16BE") {
        let units: Vec<u16> = raw
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        String::from_utf16(&units).expect("valid UTF-16")
    } else {
        String::from_utf8(raw).expect("UTF-8 text")
    };
    received.lock().unwrap().push(Mo {
        from: utf8("from"),
        to: utf8("to"),
        text,
        coding: utf8("coding"),
    });
    // An empty answer: with `max-messages = 0` Kannel sends no reply SMS anyway.
    ""
}

impl MoReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: Arc<Mutex<Vec<Mo>>> = Arc::default();
        let app = Router::new()
            .route("/mo", get(receive_mo))
            .with_state(received.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Mo> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for MoReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// bearerbox + smsbox with a loopback SMSC, owned by one test.
pub struct Kannel {
    pub sendsms_port: u16,
    pub mo: MoReceiver,
    dir: tempfile::TempDir,
    admin_port: u16,
    children: Vec<Child>,
}

/// Kannel's configuration for a test: loopback SMSC, one sendsms user allowed `max_parts`
/// concatenated parts, and an sms-service that forwards every MO to the receiver.
fn config(dir: &Path, admin: u16, smsbox: u16, sendsms: u16, mo: u16, max_parts: usize) -> String {
    let log = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"group = core
admin-port = {admin}
admin-interface = 127.0.0.1
admin-password = "admin-pw"
status-password = "status-pw"
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox}
smsbox-interface = 127.0.0.1
box-deny-ip = "*.*.*.*"
box-allow-ip = "127.0.0.1"
log-file = "{bearerbox_log}"
log-level = 1
access-log = "{access_log}"
sms-combine-concatenated-mo = true

group = smsc
smsc = loopback
smsc-id = loop

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{smsbox_log}"
log-level = 1

group = sendsms-user
username = "{KANNEL_USER}"
password = "{KANNEL_PASSWORD}"
max-messages = {max_parts}
concatenation = true
black-list-regex = "^\{BLACKLISTED_PREFIX}"

group = sms-service
keyword = default
catch-all = true
get-url = "http://127.0.0.1:{mo}/mo?from=%p&to=%P&text=%b&coding=%c&charset=%C"
max-messages = 0
omit-empty = true
"#,
        bearerbox_log = log("bearerbox.log"),
        access_log = log("access.log"),
        smsbox_log = log("smsbox.log"),
    )
}

impl Kannel {
    /// Starts Kannel and waits until smsbox is connected and the loopback SMSC is online.
    pub async fn start(max_parts: usize) -> Self {
        assert!(
            Path::new(BEARERBOX).is_file() && Path::new(SMSBOX).is_file(),
            "Kannel is not installed ({BEARERBOX} and {SMSBOX} are missing): the SMS tests \
             need a real gateway; scripts/test installs it (apt-get install kannel)"
        );
        let mo = MoReceiver::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let (admin_port, smsbox_port, sendsms_port) = (free_port(), free_port(), free_port());
        let conf = dir.path().join("kannel.conf");
        std::fs::write(
            &conf,
            config(
                dir.path(),
                admin_port,
                smsbox_port,
                sendsms_port,
                mo.port,
                max_parts,
            ),
        )
        .unwrap();
        let mut kannel = Self {
            sendsms_port,
            mo,
            dir,
            admin_port,
            children: Vec::new(),
        };
        kannel.spawn(BEARERBOX, &conf);
        kannel
            .wait_until("bearerbox to answer on its admin port", |status| {
                status.contains("Status: running")
            })
            .await;
        kannel.spawn(SMSBOX, &conf);
        kannel
            .wait_until(
                "smsbox to connect and the loopback SMSC to be online",
                |s| s.contains("smsbox:") && s.contains("loop") && s.contains("online"),
            )
            .await;
        let url = format!("http://127.0.0.1:{sendsms_port}/");
        eventually(
            Duration::from_secs(20),
            "smsbox to answer on its sendsms port",
            || {
                let url = url.clone();
                async move { reqwest::get(url).await.ok().map(|_| ()) }
            },
        )
        .await;
        kannel
    }

    fn spawn(&mut self, bin: &str, conf: &Path) {
        let out = std::fs::File::create(self.dir.path().join(format!(
            "{}.out",
            Path::new(bin).file_name().unwrap().to_string_lossy()
        )))
        .unwrap();
        let child = Command::new(bin)
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} does not start: {e}"));
        self.children.push(child);
    }

    /// Polls bearerbox's `status.txt` until `ready` holds (logs in the panic otherwise).
    async fn wait_until(&self, what: &str, ready: impl Fn(&str) -> bool) {
        let url = format!(
            "http://127.0.0.1:{}/status.txt?password=status-pw",
            self.admin_port
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(res) = reqwest::get(&url).await {
                if ready(&res.text().await.unwrap_or_default()) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; Kannel logs:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kannel's sendsms URL, for `sms_gateway_url`.
    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    /// Kannel's own logs, for assertion messages.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// Waits until at least `n` SMS came back from the loopback SMSC.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mo> {
        eventually(timeout, &format!("{n} SMS through Kannel"), || async {
            let got = self.mo.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["bearerbox.out", "smsbox.out", "bearerbox.log", "smsbox.log"] {
        let path: PathBuf = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!("--- {name}\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Drop for Kannel {
    fn drop(&mut self) {
        // smsbox first, so it does not spin reconnecting to a dead bearerbox.
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
