//! One-command install into a temporary root against a running server: the binary, the config with a
//! per-node credential, the systemd unit; the credential writes only its own node; the installed agent runs.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::spawn_app;

/// The agent binary cargo built next to this test binary, if any.
fn built_agent() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("fleetpilot-agent");
    p.is_file().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_script_installs_enrolls_and_the_credential_writes_only_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let binary = match built_agent() {
        Some(p) => p,
        None => {
            let p = dir.path().join("stand-in-agent");
            std::fs::write(&p, b"#!/bin/sh\necho stand-in\n").unwrap();
            p
        }
    };
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.agent_binary = Some(binary.clone());
    })
    .await;

    let r = app
        .api_post(
            "/api/v1/enrollment-tokens",
            &json!({"ttl_secs": 600, "max_uses": 1, "note": "test", "deployments": ["ml/llama"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let t: Value = r.json().await.unwrap();
    let token = t["token"].as_str().unwrap().to_string();
    assert!(
        t["install_command"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/install.sh | sudo sh -s -- --token {token}", app.address))
    );

    let script = app.http.get(format!("{}/install.sh", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(script.contains(&format!("SERVER=\"{}\"", app.address)));
    // The binary's SHA-256 is baked into the script and published beside the binary; the installer checks it.
    use sha2::Digest as _;
    let sum = hex::encode(sha2::Sha256::digest(std::fs::read(&binary).unwrap()));
    assert!(script.contains(&format!("AGENT_SHA256=\"{sum}\"")), "the script carries the binary's SHA-256");
    let published = app.http.get(format!("{}/download/fleetpilot-agent.sha256", app.address)).send().await.unwrap();
    assert_eq!(published.text().await.unwrap(), format!("{sum}  fleetpilot-agent\n"));
    {
        // A binary that does not match (tampered in transit, or a stale cache) is not installed.
        let tampered = script.replace(&sum, &"0".repeat(64));
        let path = dir.path().join("tampered.sh");
        std::fs::write(&path, tampered).unwrap();
        let troot = dir.path().join("troot");
        let out = std::process::Command::new("sh")
            .arg(&path)
            .args(["--token", "unused", "--root", troot.to_str().unwrap(), "--node-id", "tampered"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("SHA-256") && err.contains("not installed"), "{err}");
        assert!(
            !troot.join("usr/local/bin/fleetpilot-agent").exists()
                && !troot.join("usr/local/bin/fleetpilot-agent.new").exists()
        );
        // Plain http to a host other than loopback is refused unless asked for.
        let out = std::process::Command::new("sh")
            .arg(&path)
            .args(["--token", "t", "--root", troot.to_str().unwrap(), "--server", "http://fleet.example"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-http"));
    }
    let script_path = dir.path().join("install.sh");
    std::fs::write(&script_path, &script).unwrap();
    let root = dir.path().join("root");
    let run = {
        let (script_path, root) = (script_path.clone(), root.clone());
        move |token: String, node: &str| {
            std::process::Command::new("sh")
                .arg(&script_path)
                .args([
                    "--token",
                    &token,
                    "--root",
                    root.to_str().unwrap(),
                    "--node-id",
                    node,
                    "--deployment",
                    "ml/llama",
                ])
                .output()
                .unwrap()
        }
    };
    let out = tokio::task::spawn_blocking({
        let (token, run) = (token.clone(), run.clone());
        move || run(token, "installed-node-1")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let installed = root.join("usr/local/bin/fleetpilot-agent");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&binary).unwrap(), "the served binary is installed");
    assert_eq!(std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777, 0o755);
    let config_path = root.join("etc/fleetpilot/agent.toml");
    assert_eq!(
        std::fs::metadata(&config_path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the credential is private"
    );
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(
        config.contains("agent_id = \"installed-node-1\"") && config.contains("deployment = \"ml/llama\""),
        "{config}"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/fleetpilot-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/fleetpilot-agent run --config /etc/fleetpilot/agent.toml"));
    let credential =
        config.lines().find_map(|l| l.strip_prefix("token = \"")).unwrap().trim_end_matches('"').to_string();
    assert!(credential.starts_with("fpn_"));
    assert_ne!(credential, token, "the enrollment token is exchanged, not stored");

    // The enrollment token was for one use only.
    let again = tokio::task::spawn_blocking({
        let token = token.clone();
        move || run(token, "installed-node-2")
    })
    .await
    .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("enrollment refused"));

    // The node credential writes its own node, and nothing else.
    let now = chrono::Utc::now().timestamp_millis();
    let batch = |agent: &str| {
        json!({"version": 1, "agent_id": agent, "seq": 1, "sent_at_ms": now,
               "node": {"hostname": agent, "agent_version": "t", "gpu_source": "none"}})
    };
    let post = |body: Value| {
        let (http, url, cred) = (app.http.clone(), format!("{}/api/v1/ingest", app.address), credential.clone());
        async move { http.post(url).bearer_auth(cred).json(&body).send().await.unwrap() }
    };
    assert_eq!(post(batch("installed-node-1")).await.status(), 200);
    let other = post(batch("someone-else")).await;
    assert_eq!(other.status(), 403);
    assert_eq!(other.json::<Value>().await.unwrap()["field"], "agent_id");
    assert_eq!(app.count("SELECT count(*) FROM nodes WHERE node_id = 'someone-else'").await, 0);

    // The installed agent runs with the written config (no GPU here: it reports the node as "no GPU").
    if built_agent().is_some() {
        let mut child = std::process::Command::new(&installed)
            .args(["run", "--config", config_path.to_str().unwrap(), "--metrics-addr", "0"])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let sql = "SELECT gpu_source FROM nodes WHERE node_id = 'installed-node-1' AND agent_version <> 't'";
        let source: String = app.eventually_scalar(Duration::from_secs(20), "the installed agent to report", sql).await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(source, "none");
    }
    let list = app.api_json("/api/v1/enrollments").await;
    assert_eq!(list[0]["node_id"], "installed-node-1");
    app.stop().await;
}
