//! Compatibility proof: the real python-cinderclient (pinned in scripts/requirements.txt,
//! installed into `.venv` by scripts/test) runs tests/python/cinderclient_check.py against
//! this Herald. The test fails when any cinderclient check fails.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::helpers::spawn_app;

/// `$HERALD_PYTHON`, else the repository's `.venv` interpreter.
fn python() -> PathBuf {
    std::env::var_os("HERALD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[tokio::test]
async fn python_cinderclient_lists_shows_and_deletes_messages_unmodified() {
    // Arrange: four messages of the caller's project, oldest first, and one of another
    let app = spawn_app().await;
    let p = app.project.clone();
    let bodies = [
        json!({"event_id": "HERALD_SUBSCRIPTION_001_001", "resource_uuid": "11111111-1111-4111-8111-111111111111"}),
        json!({"event_id": "HERALD_SUBSCRIPTION_001_002", "resource_uuid": "22222222-2222-4222-8222-222222222222", "request_id": "req-2"}),
        json!({"event_id": "HERALD_SUBSCRIPTION_002_003", "resource_uuid": "22222222-2222-4222-8222-222222222222"}),
        json!({"event_id": "HERALD_SUBSCRIPTION_003_004", "resource_uuid": "44444444-4444-4444-8444-444444444444"}),
    ];
    let mut mine: Vec<Value> = Vec::new();
    for body in bodies {
        mine.push(app.create_user_message(&p, body).await);
    }
    let foreign = app
        .create_user_message(
            &format!("{p}other"),
            json!({"event_id": "HERALD_SUBSCRIPTION_001_001"}),
        )
        .await;
    let seed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        seed.path(),
        json!({"mine": mine, "foreign": foreign["id"]}).to_string(),
    )
    .unwrap();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/cinderclient_check.py");

    // Act
    let out = tokio::process::Command::new(python())
        .arg(script)
        .arg(&app.address)
        .arg(&p)
        .arg(seed.path())
        .output()
        .await
        .expect("python runs (scripts/test installs python-cinderclient into .venv)");

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cinderclient checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all cinderclient checks passed"),
        "{stdout}"
    );
}
