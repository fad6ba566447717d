//! docker-compose.yml must stay valid compose even where no Docker engine runs (as here):
//! parse it and check the topology the README promises.

use std::path::Path;

use serde_yaml::Value;

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"))
}

#[test]
fn compose_file_defines_nats_herald_and_mailpit() {
    let doc = load("docker-compose.yml");
    let services = doc["services"].as_mapping().expect("services mapping");
    for name in ["nats", "herald", "mailpit"] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    // NATS: JetStream config mounted from nats/, a named volume, a health check.
    let nats = &doc["services"]["nats"];
    let volumes: Vec<&str> = nats["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let config = volumes
        .iter()
        .find(|v| v.starts_with("./nats/"))
        .expect("config mounted from nats/");
    let host_file = config.split(':').next().unwrap();
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(host_file)
            .is_file(),
        "{host_file} missing"
    );
    let named = volumes
        .iter()
        .find(|v| !v.starts_with('.'))
        .expect("a named volume");
    let volume_name = named.split(':').next().unwrap();
    assert!(doc["volumes"]
        .as_mapping()
        .unwrap()
        .contains_key(volume_name));
    assert!(nats["healthcheck"]["test"].is_sequence());

    // Herald: built from the Dockerfile, configured by env, waits for a healthy NATS.
    let herald = &doc["services"]["herald"];
    let dockerfile = herald["build"]["dockerfile"].as_str().unwrap();
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dockerfile)
        .is_file());
    assert_eq!(herald["environment"]["HERALD_NATS_URL"], "nats://nats:4222");
    assert_eq!(
        herald["environment"]["HERALD_SMTP_URL"],
        "smtp://mailpit:1025"
    );
    assert_eq!(herald["depends_on"]["nats"]["condition"], "service_healthy");
}

#[test]
fn compose_ports_are_published_on_loopback_only() {
    let doc = load("docker-compose.yml");
    for (name, service) in doc["services"].as_mapping().unwrap() {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port} beyond loopback"
            );
        }
    }
}

#[test]
fn cluster_compose_file_defines_three_nats_two_heralds_and_mailpit() {
    let doc = load("docker-compose.cluster.yml");
    let services = doc["services"].as_mapping().expect("services mapping");
    for name in ["nats1", "nats2", "nats3", "herald1", "herald2", "mailpit"] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    // The YAML anchors merge: each Herald gets the shared environment.
    let herald: Value = serde_yaml::from_value(doc["services"]["herald2"].clone()).unwrap();
    let env = herald
        .get("environment")
        .or_else(|| herald.get("<<").and_then(|m| m.get("environment")))
        .expect("herald2 environment via the x-herald anchor");
    assert_eq!(env["HERALD_REPLICAS"], "3");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("nats/cluster/docker.conf")
        .is_file());
}

/// `user: {user}, password: "{password}"` appears in the NATS config `file`.
fn config_has_user(file: &str, user: &Value, password: &Value) -> bool {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let (user, password) = (user.as_str().unwrap(), password.as_str().unwrap());
    text.contains(&format!("user: {user}, password: \"{password}\""))
}

#[test]
fn compose_heralds_authenticate_as_the_users_of_their_nats_config_with_a_separate_delivery_user() {
    let single = load("docker-compose.yml");
    let cluster = load("docker-compose.cluster.yml");
    let cluster_herald: Value =
        serde_yaml::from_value(cluster["services"]["herald1"].clone()).unwrap();
    let cluster_env = cluster_herald
        .get("environment")
        .or_else(|| cluster_herald.get("<<").and_then(|m| m.get("environment")))
        .expect("herald1 environment via the x-herald anchor")
        .clone();
    for (env, conf) in [
        (
            single["services"]["herald"]["environment"].clone(),
            "nats/docker.conf",
        ),
        (cluster_env, "nats/cluster/docker.conf"),
    ] {
        assert_eq!(
            env["HERALD_NATS_DELIVERY_USER"], "herald_delivery",
            "{conf}"
        );
        assert_ne!(env["HERALD_NATS_DELIVERY_USER"], env["HERALD_NATS_USER"]);
        assert!(
            config_has_user(conf, &env["HERALD_NATS_USER"], &env["HERALD_NATS_PASSWORD"]),
            "{conf} lacks Herald's user"
        );
        assert!(
            config_has_user(
                conf,
                &env["HERALD_NATS_DELIVERY_USER"],
                &env["HERALD_NATS_DELIVERY_PASSWORD"]
            ),
            "{conf} lacks the delivery user"
        );
    }
}

#[test]
fn the_sms_profile_adds_a_kannel_gateway_herald_can_point_at() {
    let doc = load("docker-compose.yml");
    let kannel = &doc["services"]["kannel"];
    assert_eq!(
        kannel["profiles"],
        serde_yaml::from_str::<Value>("[sms]").unwrap(),
        "kannel runs only with --profile sms"
    );
    let context = kannel["build"]["context"].as_str().unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(context);
    for file in ["Dockerfile", "kannel.conf", "start.sh"] {
        assert!(dir.join(file).is_file(), "{context}/{file} missing");
    }
    let conf = std::fs::read_to_string(dir.join("kannel.conf")).unwrap();
    assert!(conf.contains("smsc = loopback"), "try-out SMSC is loopback");
    assert!(conf.contains("sendsms-port = 13013"));
    assert!(kannel["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p.as_str() == Some("127.0.0.1:13013:13013")));
    // Herald has no gateway unless HERALD_SMS_GATEWAY_URL is set, and then it uses the
    // credentials kannel.conf defines.
    let env = &doc["services"]["herald"]["environment"];
    assert_eq!(env["HERALD_SMS_GATEWAY_URL"], "${HERALD_SMS_GATEWAY_URL:-}");
    for (var, conf_line) in [
        ("HERALD_SMS_GATEWAY_USER", "username = \"herald\""),
        (
            "HERALD_SMS_GATEWAY_PASSWORD",
            "password = \"change-me-kannel\"",
        ),
    ] {
        assert!(conf.contains(conf_line), "kannel.conf lacks {conf_line}");
        let default = conf_line.split('"').nth(1).unwrap();
        assert_eq!(env[var], format!("${{{var}:-{default}}}").as_str());
    }
}
