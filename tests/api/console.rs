//! The console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test) driven by Selenium (pinned in
//! scripts/requirements.txt) runs tests/python/console_check.py against this Herald and a
//! real webhook receiver the script runs. Screenshots land in target/console-shots/.

use std::path::PathBuf;

use reqwest::Method;

use crate::helpers::spawn_app;

/// `$HERALD_PYTHON`, else the repository's `.venv` interpreter.
fn python() -> PathBuf {
    std::env::var_os("HERALD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[tokio::test]
async fn the_console_logs_in_manages_topics_and_replays_dead_letters_in_chromium() {
    // Arrange: Herald (noauth) and another project's topic the console must not reach.
    let app = spawn_app().await;
    let other = format!("{}other", app.project);
    let res = app
        .anon(Method::PUT, "/v2/topics/secret-topic")
        .header("X-Project-ID", &other)
        .json(&serde_json::json!({"owner": "someone else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/console-shots");
    std::fs::create_dir_all(&shots).unwrap();

    // Act
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/python/console_check.py"))
        .arg(&app.address)
        .arg(&app.project)
        .arg("secret-topic")
        .arg(&shots)
        .output()
        .await
        .expect("python runs (scripts/test installs selenium into .venv)");

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all console checks passed"), "{stdout}");
    // The other project's topic is untouched by anything the browser did.
    let res = app
        .anon(Method::GET, "/v2/topics/secret-topic")
        .header("X-Project-ID", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
