//! `switchboard serve` end to end: start on a free port, answer `/healthz`,
//! create the first user once, stop cleanly on SIGTERM.

#![allow(clippy::unwrap_used)]

mod common;

use common::{http_get, Sandbox, Server};

#[test]
fn serves_healthz_and_stops_on_sigterm() {
    let sb = Sandbox::new();
    let mut cmd = sb.cmd(&["serve", "--http", "127.0.0.1:0", "--sip", "127.0.0.1:0"]);
    cmd.env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery");
    let mut server = Server::start(cmd);
    let addr = server.wait_for_dashboard();
    assert_ne!(addr.port(), 0, "the real port is printed");
    assert!(
        server.stdout.iter().all(|l| !l.contains("correct horse")),
        "a password from the environment is never printed: {:?}",
        server.stdout
    );
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("SWITCHBOARD_ADMIN_PASSWORD")),
        "{:?}",
        server.stdout
    );

    let (status, _) = http_get(addr, "/healthz");
    assert_eq!(status, 200);
    // SIP listens on loopback (the port picked for `--sip 127.0.0.1:0`).
    server.wait_for_line("SIP: 127.0.0.1:");

    assert_eq!(server.terminate(), 0, "graceful exit on SIGTERM");
    let stderr = server.stderr();

    assert!(!stderr.contains("correct horse"), "{stderr}");
    for dir in ["secret.key", "switchboard.db", "recordings"] {
        assert!(
            sb.data_dir().join(dir).exists(),
            "{dir} created in the data dir"
        );
    }
}

#[tokio::test]
async fn generated_admin_password_is_printed_on_first_start_only() {
    let sb = Sandbox::new();
    let mut first = Server::start(sb.cmd(&["serve", "--http", "127.0.0.1:0"]));
    let line = first.wait_for_line("Created the dashboard user `admin` with password: ");
    let password = line.rsplit(' ').next().unwrap().to_string();
    assert!(password.len() >= 20, "{line}");
    first.wait_for_dashboard();
    assert_eq!(first.terminate(), 0);

    let store = sb.store().await;
    assert!(
        store
            .verify_password("admin", &password)
            .await
            .unwrap()
            .is_some(),
        "the printed password logs in"
    );
    store.close().await;

    let mut second = Server::start(sb.cmd(&["serve", "--http", "127.0.0.1:0"]));
    second.wait_for_dashboard();
    assert!(
        second
            .stdout
            .iter()
            .all(|l| !l.contains(&password) && !l.contains("password")),
        "no password on the second start: {:?}",
        second.stdout
    );
    assert_eq!(second.terminate(), 0);
}
