//! Property-based fuzzing of the whole REST surface: schemathesis (pinned in
//! scripts/requirements.txt, installed into `.venv` by scripts/test) reads `/openapi.json`
//! of a Herald spawned here and sends generated valid and invalid requests to every
//! documented operation. The test fails on any server error or any response that the
//! OpenAPI document does not describe (status, content type, headers, body schema).

use std::{path::PathBuf, time::Instant};

use crate::helpers::spawn_app;

/// `$HERALD_SCHEMATHESIS`, else the repository's `.venv` executable.
fn schemathesis() -> PathBuf {
    std::env::var_os("HERALD_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/schemathesis"))
}

/// The schemathesis command line, shared with the README so a failure can be replayed
/// by hand against `scripts/run`.
pub fn schemathesis_args(openapi_url: &str, project: &str) -> Vec<String> {
    [
        "run",
        openapi_url,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,\
         response_headers_conformance,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "100",
        // Same cases every run; no example database on disk.
        "--generation-deterministic",
        // One worker: hypothesis on CPython 3.11 is not thread-safe ("AST constructor
        // recursion depth mismatch" with several workers).
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--continue-on-failure",
        "--no-shrink",
        "--no-color",
        "--header",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("X-Project-ID: {project}")])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_response() {
    // Arrange
    let app = spawn_app().await;
    let workdir = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let args = schemathesis_args(&format!("{}/openapi.json", app.address), &app.project);

    // Act
    let started = Instant::now();
    let out = tokio::process::Command::new(schemathesis())
        .args(&args)
        .current_dir(workdir.path())
        // Serializes the topic PATCH media type as JSON.
        .env("PYTHONPATH", root.join("tests/python"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .output()
        .await
        .expect("schemathesis runs (scripts/test installs it into .venv)");

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis reported failures ({}, after {:?}):\n{stdout}\n{stderr}",
        out.status,
        started.elapsed()
    );
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "schemathesis tested nothing:\n{stdout}"
    );
}
