//! Native TLS (issue #15): the server speaks HTTPS with the configured certificate, reloads a renewed one
//! without a restart, marks cookies `Secure`, and the agent trusts only the CA it is given.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gpu_agent::protocol::{Batch, NodeInfo, PROTOCOL_VERSION};
use gpu_agent::sender::{Sender, SenderConfig};
use gpu_agent::spool::SpoolConfig;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::helpers::{eventually, form_body, set_cookie, spawn_app};

/// A CA and a leaf for 127.0.0.1 / localhost signed by it: (CA PEM, leaf PEM, leaf key PEM).
fn ca_and_leaf(name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

fn client(ca_pem: &str) -> reqwest::Client {
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Written aside and renamed, as cert-manager and ACME clients do.
    std::fs::write(dir.join("tls.crt.new"), cert).unwrap();
    std::fs::write(dir.join("tls.key.new"), key).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}

fn batch(seq: u64) -> Batch {
    Batch {
        version: PROTOCOL_VERSION,
        agent_id: "tls-node".into(),
        seq,
        sent_at_ms: chrono::Utc::now().timestamp_millis(),
        node: NodeInfo {
            hostname: "tls-node".into(),
            agent_version: "test".into(),
            gpu_source: "none".into(),
            group: None,
            deployment: None,
        },
        gpus: Vec::new(),
        serving: Vec::new(),
        command_results: Vec::new(),
        probes: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_tls_reloads_a_renewed_certificate_and_the_agent_trusts_only_its_ca() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = ca_and_leaf("first");
    write_pair(dir.path(), &cert1, &key1);
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let app = spawn_app(|s| {
        s.control.enabled = false;
        s.tls.cert_file = Some(cert_file.clone());
        s.tls.key_file = Some(key_file.clone());
        s.tls.reload_secs = 0.2;
        s.dashboard.admin_password = fleetpilot::config::Secret::new("tls-admin-password");
    })
    .await;
    let https = app.address.replace("http://", "https://");

    // HTTPS with the CA; neither plain HTTP nor a client without the CA gets an answer.
    let c1 = client(&ca1);
    assert_eq!(c1.get(format!("{https}/healthz")).send().await.unwrap().status(), 200);
    let plain = app.http.get(format!("{}/healthz", app.address)).send().await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()), "no plain HTTP on a TLS listener");
    let (other_ca, _, _) = ca_and_leaf("other");
    assert!(client(&other_ca).get(format!("{https}/healthz")).send().await.is_err(), "an unknown CA is refused");

    // The session cookie is Secure.
    let login = c1.get(format!("{https}/login")).send().await.unwrap();
    let (csrf, _) = set_cookie(&login, "fp_login_csrf").unwrap();
    let r = c1
        .post(format!("{https}/login"))
        .header("cookie", format!("fp_login_csrf={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("username", "admin"), ("password", "tls-admin-password"), ("csrf", &csrf)]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("fp_session="))
        .expect("a session cookie")
        .to_lowercase();
    assert!(cookie.contains("; secure"), "{cookie}");

    // The agent's sender, trusting only the first CA, uploads.
    let sender_config = |ca: &str| SenderConfig {
        server_url: https.clone(),
        token: app.agent_token.clone(),
        spool: SpoolConfig { dir: None, max_bytes: 1 << 20, max_batches: 16 },
        request_timeout: Duration::from_secs(5),
        backoff: Default::default(),
        server_ca: Some(Arc::new(ca.as_bytes().to_vec())),
    };
    let mut sender = Sender::new(sender_config(&ca1), Arc::default()).unwrap();
    let acks = sender.deliver(&batch(1), Duration::from_secs(5)).await;
    assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), [1], "uploaded over TLS");
    // An agent given another CA keeps its batch (spooled) rather than sending it to an impostor.
    let mut wary = Sender::new(sender_config(&other_ca), Arc::default()).unwrap();
    assert!(wary.deliver(&batch(2), Duration::from_secs(2)).await.is_empty());
    assert_eq!(wary.queued(), 1);

    // Renewal: a certificate from a new CA is picked up without a restart.
    let (ca2, cert2, key2) = ca_and_leaf("second");
    write_pair(dir.path(), &cert2, &key2);
    let c2 = client(&ca2);
    eventually(Duration::from_secs(10), "the renewed certificate to be served", || async {
        c2.get(format!("{https}/healthz")).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await;
    assert!(client(&ca1).get(format!("{https}/healthz")).send().await.is_err(), "the old certificate is gone");

    // A broken renewal keeps the current certificate in service.
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(c2.get(format!("{https}/healthz")).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[test]
fn tls_settings_are_checked_and_an_unreadable_certificate_stops_the_start() {
    let mut s = crate::helpers::test_settings();
    s.tls.cert_file = Some("/nonexistent/tls.crt".into());
    let e = s.validate().unwrap_err().to_string();
    assert!(e.contains("tls.key_file"), "{e}");
    s.tls.key_file = Some("/nonexistent/tls.key".into());
    s.validate().unwrap();
    let e = fleetpilot::tls::server_config(&s.tls).unwrap_err().to_string();
    assert!(e.starts_with("tls.cert_file /nonexistent/tls.crt"), "{e}");
    // The agent refuses a CA file that holds no certificate, naming the option.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "nothing here").unwrap();
    let settings = gpu_agent::config::Settings {
        server_url: Some("https://cp".into()),
        token: Some("t".into()),
        server_ca_file: Some(bad),
        ..Default::default()
    };
    let e = settings.resolve("host").unwrap_err().to_string();
    assert!(e.starts_with("server_ca_file"), "{e}");
}
