//! Mutual TLS with the real binary, as an operator sets it up: `hubsync
//! init master`, `[listen].require_client_cert = true`, `hubsync node add
//! --cert`, `hubsync init client` with `[master].client_cert` and
//! `client_key`, then `hubsync serve` on both sides. The client syncs both
//! ways through its local API; the same client configured without the
//! certificate is refused, says so on stderr and in `hubsync status`, and
//! the master records why.

mod support;

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use support::{
    COMMAND_DEADLINE, Guard, NodeDir, Served, free_addr, hubsync, init_master, path_str, request,
    run, wait_for_exit,
};

/// Runs a command expected to fail; returns (stdout, stderr).
fn run_failing(cwd: &Path, args: &[&str]) -> (String, String) {
    let what = format!("hubsync {}", args.join(" "));
    let mut child = Guard(
        hubsync(cwd, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{what}`: {e}")),
    );
    let status = wait_for_exit(&mut child.0, COMMAND_DEADLINE)
        .unwrap_or_else(|| panic!("`{what}` did not finish within {COMMAND_DEADLINE:?}"));
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.0.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let stderr = read(child.0.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    assert!(
        !status.success(),
        "`{what}` should have failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

async fn call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    request(addr, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_client_syncs_over_mutual_tls_and_without_its_certificate_is_refused_clearly() {
    let root = tempfile::tempdir().expect("tempdir");
    let r = root.path();
    let master = init_master(r);
    let text = std::fs::read_to_string(&master.config).expect("master config");
    let text = text.replacen(
        "key = \"tls/server.key\"\n",
        "key = \"tls/server.key\"\nrequire_client_cert = true\n",
        1,
    );
    assert!(text.contains("require_client_cert = true"), "{text}");
    std::fs::write(&master.config, text).expect("write master config");

    // `node add --cert`: the token once, and the certificate and key files.
    let out = run(
        r,
        &[
            "node",
            "add",
            "--config",
            path_str(&master.config),
            "--code",
            "DESKTOP-1",
            "--cert",
            "--json",
        ],
    );
    let added: Value = serde_json::from_str(&out).expect("node add --json");
    let field = |k: &str| {
        added[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {added}"))
            .to_string()
    };
    let (node_id, token, cert, key) = (
        field("node_id"),
        field("token"),
        field("client_cert"),
        field("client_key"),
    );
    assert!(Path::new(&cert).is_file() && Path::new(&key).is_file());

    // The client, configured as the operator docs say (config/client.toml).
    let dir = r.join("desktop-1");
    let api = free_addr();
    run(
        r,
        &[
            "init",
            "client",
            "--dir",
            path_str(&dir),
            "--master",
            &format!("https://{}", master.listen.expect("master listens")),
            "--ca-cert",
            path_str(&master.dir.join("tls/ca.pem")),
            "--node-id",
            &node_id,
            "--token",
            &token,
            "--api",
            &api.to_string(),
            "--sync-interval",
            "0",
        ],
    );
    let plain_config = dir.join("hubsync.toml");
    let plain = std::fs::read_to_string(&plain_config).expect("client config");
    assert!(plain.contains("[master]\n"), "{plain}");
    let with_cert = plain.replacen(
        "[master]\n",
        &format!(
            "[master]\nclient_cert = {}\nclient_key = {}\n",
            toml_str(&cert),
            toml_str(&key)
        ),
        1,
    );
    let cert_config = dir.join("mtls.toml");
    std::fs::write(&cert_config, with_cert).expect("write client config");
    let client = NodeDir {
        name: "desktop-1".into(),
        dir: dir.clone(),
        config: cert_config.clone(),
        api,
        listen: None,
        node_id: node_id.clone(),
    };

    let served_master = Served::start(&master).await;
    let served_client = Served::start(&client).await;

    // Client → master.
    let (status, brigade) = call(
        api,
        "POST",
        "/api/v1/entities/Brigade",
        Some(&json!({"name": "North"})),
    )
    .await;
    assert_eq!(status, 201, "{brigade}");
    let brigade_uuid = brigade["uuid"].as_str().expect("uuid").to_string();
    let (status, summary) = call(api, "POST", "/api/v1/sync", None).await;
    assert_eq!(status, 200, "sync over mutual TLS: {summary}");
    let (status, on_master) = call(
        master.api,
        "GET",
        &format!("/api/v1/entities/Brigade/{brigade_uuid}"),
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the master has the client's brigade: {on_master}"
    );

    // Master → client.
    let (status, site) = call(
        master.api,
        "POST",
        "/api/v1/entities/Site",
        Some(&json!({"name": "Block A"})),
    )
    .await;
    assert_eq!(status, 201, "{site}");
    let site_uuid = site["uuid"].as_str().expect("uuid").to_string();
    let (status, summary) = call(api, "POST", "/api/v1/sync", None).await;
    assert_eq!(status, 200, "{summary}");
    let (status, on_client) = call(
        api,
        "GET",
        &format!("/api/v1/entities/Site/{site_uuid}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "the client has the master's site: {on_client}");
    served_client.terminate();

    // The same client without its certificate: refused, and it says why.
    let (_, stderr) = run_failing(r, &["sync", "--config", path_str(&plain_config)]);
    assert!(
        stderr.contains("401") || stderr.contains("unauthenticated"),
        "{stderr}"
    );
    assert!(stderr.contains("client certificate"), "{stderr}");
    eprintln!("a client without its certificate says:\n{stderr}");
    let out = run(
        r,
        &["status", "--config", path_str(&plain_config), "--json"],
    );
    let status_doc: Value = serde_json::from_str(&out).expect("status --json");
    let last_error = status_doc["sync"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last_error.contains("client certificate"),
        "the status shows the refusal: {status_doc}"
    );
    assert!(status_doc["sync"]["consecutive_failures"].as_u64() >= Some(1));
    let text = run(r, &["status", "--config", path_str(&plain_config)]);
    assert!(text.contains("last sync error"), "{text}");

    // The master recorded why.
    let out = run(
        r,
        &[
            "security-events",
            "--config",
            path_str(&master.config),
            "--kind",
            "auth_failed",
            "--json",
        ],
    );
    let events: Value = serde_json::from_str(&out).expect("security-events --json");
    let events = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .cloned()
        .unwrap_or_default();
    assert!(
        events.iter().any(|e| e["node_code"] == "DESKTOP-1"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no client certificate"))),
        "{events:?}"
    );

    // With the certificate again: the next sync succeeds and clears the error.
    run(r, &["sync", "--config", path_str(&cert_config)]);
    let out = run(r, &["status", "--config", path_str(&cert_config), "--json"]);
    let status_doc: Value = serde_json::from_str(&out).expect("status --json");
    assert!(status_doc["sync"]["last_error"].is_null(), "{status_doc}");
    served_master.terminate();
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}
