//! The handoff-related commands: `demo` against a running server and its
//! built-in sandbox, `handoffs list|show|redrive`, `salesforce keygen|test`,
//! `users set-password`, and `sandbox` on its own.

#![allow(clippy::unwrap_used)]

mod common;

use common::{http_get, Sandbox as TempDir, Server};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn demo_call_is_delivered_to_the_built_in_sandbox_and_inspectable() {
    let dir = TempDir::new();
    let sandbox_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = dir.cmd(&["serve", "--http", "127.0.0.1:0"]);
    cmd.env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery")
        .env("SWITCHBOARD_SANDBOX_ADDR", &sandbox_addr);
    let mut server = Server::start(cmd);
    server.wait_for_dashboard();
    server.wait_for_line("Salesforce sandbox: ");

    let mut demo = dir.cmd(&["demo", "--text", "--json"]);
    demo.env("SWITCHBOARD_SANDBOX_ADDR", &sandbox_addr);
    let out = demo.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["handoff"]["status"], "delivered", "{v}");
    let session = v["session"].as_str().unwrap().to_string();

    // The rep console of the sandbox shows it, with the session id attribute.
    let (status, body) = http_get(sandbox_addr.parse().unwrap(), "/sandbox/api/conversations");
    assert_eq!(status, 200);
    assert!(
        body.contains(&session) && body.contains("I need to speak with a person"),
        "{body}"
    );

    let list = dir.ok(&["handoffs", "list", "--json"]).json();
    assert_eq!(list[0]["status"], "delivered");
    let show = dir.ok(&["handoffs", "show", &session]);
    assert!(
        show.stdout.contains("routing attribute SessionId: ") && show.stdout.contains("delivered"),
        "{}",
        show.stdout
    );
    let again = dir.ok(&["handoffs", "redrive", &session]);
    assert!(again.stdout.contains("queued again"), "{}", again.stdout);
    let missing = dir.run(&["handoffs", "show", "nope"]);
    assert_eq!(missing.code, 1, "{}", missing.stderr);

    let mut test = dir.cmd(&["salesforce", "test", "--json"]);
    test.env("SWITCHBOARD_SANDBOX_ADDR", &sandbox_addr);
    let out = test.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(server.terminate(), 0);
}

#[test]
fn keygen_writes_a_private_key_and_prints_a_jwk_to_register() {
    let dir = TempDir::new();
    let key = dir.path().join("sf.pem");
    let run = dir.ok(&[
        "salesforce",
        "keygen",
        "--key-id",
        "k1",
        "--out",
        key.to_str().unwrap(),
        "--json",
    ]);
    let v = run.json();
    assert_eq!(v["jwk"]["kid"], "k1");
    assert_eq!(v["jwk"]["alg"], "RS256");
    assert!(
        v["jwk"]["x5c"][0].as_str().is_some_and(|c| c.len() > 100),
        "x5c certificate included"
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = dir.run(&["salesforce", "keygen", "--out", key.to_str().unwrap()]);
    assert_eq!(again.code, 2, "never overwrites a key: {}", again.stderr);
    let bad = dir.run(&[
        "salesforce",
        "keygen",
        "--algorithm",
        "HS256",
        "--out",
        "x.pem",
    ]);
    assert_eq!(bad.code, 2);
}

#[test]
fn set_password_ends_logins_and_prints_a_generated_password() {
    let dir = TempDir::new();
    dir.ok(&["migrate"]);
    let run = dir.run(&["users", "set-password", "admin"]);
    assert_eq!(run.code, 1, "no such user yet: {}", run.stderr);
    let mut cmd = dir.cmd(&["serve", "--http", "127.0.0.1:0"]);
    cmd.env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery");
    let mut server = Server::start(cmd);
    server.wait_for_dashboard();
    assert_eq!(server.terminate(), 0);
    let run = dir.ok(&["users", "set-password", "admin"]);
    let password = run
        .stdout
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = dir.store().await;
        assert!(store
            .verify_password("admin", &password)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .verify_password("admin", "correct horse battery")
            .await
            .unwrap()
            .is_none());
    });
}

#[test]
fn the_sandbox_runs_alone_with_faults_from_flags() {
    let dir = TempDir::new();
    let mut cmd = dir.bare_cmd(&[
        "sandbox",
        "--addr",
        "127.0.0.1:0",
        "--fail-status",
        "503",
        "--times",
        "1",
    ]);
    cmd.env("SWITCHBOARD_SANDBOX_ADDR", "127.0.0.1:0");
    let mut server = Server::start(cmd);
    let line = server.wait_for_line("Salesforce MIAW sandbox: http://");
    let addr: std::net::SocketAddr = line
        .trim_start_matches("Salesforce MIAW sandbox: http://")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (status, body) = http_get(addr, "/sandbox/api/faults");
    assert_eq!(status, 200);
    assert!(body.contains("503"), "{body}");
    let (status, _) = http_get(addr, "/sandbox/console");
    assert_eq!(status, 200);
}
