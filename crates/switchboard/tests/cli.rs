//! The command line end to end: the real binary on a temp data directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Stdio;

use common::Sandbox;

#[test]
fn agents_add_list_show_remove() {
    let sb = Sandbox::new();
    let added = sb
        .ok(&[
            "agents",
            "add",
            "--name",
            "Support",
            "--handoff-mode",
            "live_transfer",
            "--handoff-number",
            "(415) 555-0123",
            "--session-id-attribute",
            "OpencxSessionId",
            "--time-zone",
            "America/New_York",
            "--json",
        ])
        .json();
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["name"], "Support");
    assert_eq!(added["handoff_mode"], "live_transfer");
    assert_eq!(
        added["handoff_number"], "+14155550123",
        "normalised to E.164"
    );
    assert_eq!(added["routing_attributes"]["session_id"], "OpencxSessionId");

    let list = sb.ok(&["agents", "list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let table = sb.ok(&["agents", "list"]).stdout;
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("Support") && table.contains("live_transfer"),
        "{table}"
    );

    // Show by name and by id give the same agent.
    let by_name = sb.ok(&["agents", "show", "Support", "--json"]).json();
    let by_id = sb.ok(&["agents", "show", &id, "--json"]).json();
    assert_eq!(by_name, by_id);
    let text = sb.ok(&["agents", "show", "Support"]).stdout;
    assert!(text.contains("America/New_York"), "{text}");

    // A duplicate name is a conflict (exit 1).
    let dup = sb.run(&["agents", "add", "--name", "Support"]);
    assert_eq!(dup.code, 1, "{dup}");
    assert!(dup.stderr.starts_with("error: name:"), "{dup}");

    sb.ok(&["agents", "remove", "Support"]);
    assert_eq!(
        sb.ok(&["agents", "list", "--json"]).json(),
        serde_json::json!([])
    );
    let gone = sb.run(&["agents", "show", "Support"]);
    assert_eq!(gone.code, 1, "{gone}");
    assert!(gone.stderr.contains("not found"), "{gone}");
}

#[test]
fn agent_validation_errors_name_the_field_and_exit_2() {
    let sb = Sandbox::new();
    let run = sb.run(&[
        "agents",
        "add",
        "--name",
        "Sales",
        "--handoff-mode",
        "live_transfer",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .starts_with("error: handoff_number: is required when handoff_mode is live_transfer"),
        "{run}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run}");

    let run = sb.run(&[
        "agents",
        "add",
        "--name",
        "Sales",
        "--time-zone",
        "Mars/Olympus",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.starts_with("error: time_zone: "), "{run}");

    // Clap refuses words outside the enum and lists the choices.
    let run = sb.run(&[
        "agents",
        "add",
        "--name",
        "Sales",
        "--handoff-mode",
        "transfer",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("live_transfer"), "{run}");
}

#[test]
fn agent_from_json_with_flag_override() {
    let sb = Sandbox::new();
    let file = sb.path().join("agent.json");
    std::fs::write(
        &file,
        r#"{"name": "Billing", "greeting": "Billing here.", "max_concurrent_calls": 3}"#,
    )
    .unwrap();
    let agent = sb
        .ok(&[
            "agents",
            "add",
            "--from-json",
            file.to_str().unwrap(),
            "--greeting",
            "Hi, billing.",
            "--json",
        ])
        .json();
    assert_eq!(agent["name"], "Billing");
    assert_eq!(agent["greeting"], "Hi, billing.", "the flag wins");
    assert_eq!(agent["max_concurrent_calls"], 3);

    // Unknown fields are refused, naming the field.
    std::fs::write(&file, r#"{"name": "X", "greting": "typo"}"#).unwrap();
    let run = sb.run(&["agents", "add", "--from-json", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("unknown field `greting`"), "{run}");

    // From stdin.
    let mut child = sb
        .cmd(&["agents", "add", "--from-json", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"name": "Piped"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let agent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(agent["name"], "Piped");
}

#[test]
fn numbers_bind_conflict_names_the_agent() {
    let sb = Sandbox::new();
    sb.ok(&["agents", "add", "--name", "Support"]);
    sb.ok(&["agents", "add", "--name", "Sales"]);
    let n = sb
        .ok(&[
            "numbers",
            "add",
            "415-555-0100",
            "--agent",
            "Support",
            "--label",
            "main",
            "--json",
        ])
        .json();
    assert_eq!(n["e164"], "+14155550100");
    assert_eq!(n["agent_name"], "Support");
    assert_eq!(n["label"], "main");

    let run = sb.run(&["numbers", "bind", "+1 415 555 0100", "--agent", "Sales"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr.contains("Support"),
        "names the agent holding it: {run}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run}");

    // Adding it again for another agent is the same conflict.
    let run = sb.run(&["numbers", "add", "4155550100", "--agent", "Sales"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("Support"), "{run}");

    // Unbind, then the bind succeeds.
    sb.ok(&["numbers", "unbind", "+14155550100"]);
    let bound = sb
        .ok(&[
            "numbers",
            "bind",
            "+14155550100",
            "--agent",
            "Sales",
            "--json",
        ])
        .json();
    assert_eq!(bound["agent_name"], "Sales");
    let list = sb
        .ok(&["numbers", "list", "--agent", "Sales", "--json"])
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let shown = sb.ok(&["numbers", "show", "(415) 555-0100"]).stdout;
    assert!(shown.contains("Sales"), "{shown}");

    sb.ok(&["numbers", "remove", "+14155550100"]);
    assert_eq!(
        sb.ok(&["numbers", "list", "--json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn invalid_phone_number_exits_2_with_the_reason() {
    let sb = Sandbox::new();
    let run = sb.run(&["numbers", "add", "call me maybe"]);
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(
        run.stderr.trim(),
        "error: phone: `call me maybe` contains `c`; use digits, optionally with a leading + and country code"
    );
    let run = sb.run(&["numbers", "add", "+1 555"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("not a valid number"), "{run}");
}

#[test]
fn contacts_import_keeps_good_rows_and_reports_bad_ones() {
    let sb = Sandbox::new();
    sb.ok(&[
        "contacts",
        "add",
        "--phone",
        "+14155550101",
        "--name",
        "Old Name",
    ]);
    let csv = sb.path().join("contacts.csv");
    std::fs::write(
        &csv,
        "name,Phone,email,external_id\n\
         Ana Lima,+1 415 555 0100,ana@example.com,003A1\n\
         Bad Phone,call me,,\n\
         New Name,4155550101,,\n\
         Bad Email,+14155550102,not-an-email,\n\
         Bo,+14155550103,,\n",
    )
    .unwrap();
    let run = sb.run(&["contacts", "import", csv.to_str().unwrap()]);
    assert_eq!(run.code, 1, "a failed row makes the exit code 1: {run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("row 3: phone: `call me`"), "{run}");
    assert!(
        lines[1].starts_with("row 5: email: `not-an-email`"),
        "{run}"
    );
    assert_eq!(lines[2], "created 2, updated 1, failed 2");

    let contacts = sb.ok(&["contacts", "list", "--json"]).json();
    let phones: Vec<&str> = contacts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones.len(), 3, "{contacts}");
    let ana = sb
        .ok(&["contacts", "show", "+14155550100", "--json"])
        .json();
    assert_eq!(ana["email"], "ana@example.com");
    assert_eq!(ana["external_id"], "003A1");
    let updated = sb
        .ok(&["contacts", "show", "415-555-0101", "--json"])
        .json();
    assert_eq!(updated["name"], "New Name", "upserted by phone");

    let found = sb
        .ok(&["contacts", "list", "--search", "lima", "--json"])
        .json();
    assert_eq!(found.as_array().unwrap().len(), 1);

    // JSON report.
    let report = sb.run(&["contacts", "import", csv.to_str().unwrap(), "--json"]);
    assert_eq!(report.code, 1);
    let report = report.json();
    assert_eq!(report["created"], 0);
    assert_eq!(report["updated"], 3);
    assert_eq!(report["failed"][0]["row"], 3);
}

#[test]
fn contacts_import_refuses_unknown_columns() {
    let sb = Sandbox::new();
    let csv = sb.path().join("contacts.csv");
    std::fs::write(&csv, "phone,nmae,company\n+14155550100,Ana,Acme\n").unwrap();
    let run = sb.run(&["contacts", "import", csv.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("\"nmae\", \"company\""), "{run}");
    assert!(
        run.stderr.contains("phone, name, email, external_id"),
        "{run}"
    );
    assert_eq!(
        sb.ok(&["contacts", "list", "--json"]).json(),
        serde_json::json!([])
    );
}

#[test]
fn contacts_import_without_a_phone_column_names_the_columns_it_found() {
    let sb = Sandbox::new();
    let csv = sb.path().join("contacts.csv");
    std::fs::write(&csv, "\u{feff}Name,Mobile\r\nAna,+14155550100\r\n").unwrap();
    let run = sb.run(&["contacts", "import", csv.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .contains(r#"no phone column (found "Name", "Mobile")"#),
        "{run}"
    );
    // Quoted commas, CRLF and a blank row; the bad row is named by its line.
    std::fs::write(
        &csv,
        "phone,name\r\n\"+14155550100\",\"Lima, Ana\"\r\n,\r\nnope,Bo\r\n",
    )
    .unwrap();
    let run = sb.run(&["contacts", "import", csv.to_str().unwrap(), "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let report = run.json();
    assert_eq!(report["created"], 1);
    assert_eq!(report["blank"], 1);
    assert_eq!(report["failed"][0]["row"], 4);
    assert_eq!(report["failed"][0]["raw"], "nope,Bo");
    let ana = sb
        .ok(&["contacts", "show", "+14155550100", "--json"])
        .json();
    assert_eq!(ana["name"], "Lima, Ana");
}

#[test]
fn trunk_passwords_come_from_env_or_stdin_and_are_never_shown() {
    let sb = Sandbox::new();
    let trunk = sb
        .cmd(&[
            "trunks",
            "add",
            "--name",
            "carrier",
            "--host",
            "sip.example.com",
            "--allow",
            "203.0.113.0/24",
            "--outbound-username",
            "acme",
            "--outbound-password-env",
            "TRUNK_PW",
            "--register",
            "--transfer",
            "refer",
            "--json",
        ])
        .env("TRUNK_PW", "hunter2-secret")
        .output()
        .unwrap();
    assert!(
        trunk.status.success(),
        "{}",
        String::from_utf8_lossy(&trunk.stderr)
    );
    let trunk: serde_json::Value = serde_json::from_slice(&trunk.stdout).unwrap();
    assert_eq!(trunk["outbound_password_set"], true);
    assert_eq!(trunk["inbound_password_set"], false);
    assert_eq!(trunk["transfer"], "refer");
    for args in [
        vec!["trunks", "show", "carrier"],
        vec!["trunks", "show", "carrier", "--json"],
        vec!["trunks", "list", "--json"],
    ] {
        let out = sb.ok(&args);
        assert!(!out.stdout.contains("hunter2"), "{out}");
    }
    assert!(sb.ok(&["trunks", "show", "carrier"]).stdout.contains("set"));

    // A named variable that is not set is an input error.
    let run = sb.run(&[
        "trunks",
        "add",
        "--name",
        "pbx",
        "--host",
        "10.0.0.2",
        "--inbound-username",
        "pbx",
        "--inbound-password-env",
        "NOT_SET_ANYWHERE",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("NOT_SET_ANYWHERE is not set"), "{run}");

    // From stdin.
    let mut child = sb
        .cmd(&[
            "trunks",
            "add",
            "--name",
            "pbx",
            "--host",
            "10.0.0.2",
            "--inbound-username",
            "pbx",
            "--inbound-password-stdin",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let pbx: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pbx["inbound_password_set"], true);

    // A trunk open to anyone is refused with the reason.
    let run = sb.run(&[
        "trunks",
        "add",
        "--name",
        "open",
        "--host",
        "sip.example.net",
    ]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.starts_with("error: allowed_cidrs: "), "{run}");
    sb.ok(&["trunks", "remove", "pbx"]);
}

#[test]
fn tokens_create_shows_the_secret_once() {
    let sb = Sandbox::new();
    let created = sb
        .ok(&["tokens", "create", "--name", "ci", "--json"])
        .json();
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("sb_"), "{created}");
    assert_eq!(created["name"], "ci");
    let text = sb.ok(&["tokens", "create", "--name", "crm"]).stdout;
    assert!(text.contains("Token: sb_"), "{text}");

    let list = sb.ok(&["tokens", "list", "--json"]);
    assert!(
        !list.stdout.contains("sb_"),
        "secrets are not listed: {list}"
    );
    assert_eq!(list.json().as_array().unwrap().len(), 2);

    let id = created["id"].as_str().unwrap();
    sb.ok(&["tokens", "revoke", id]);
    assert_eq!(
        sb.ok(&["tokens", "list", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = sb.run(&["tokens", "revoke", id]);
    assert_eq!(again.code, 1, "{again}");
    let bad = sb.run(&["tokens", "revoke", "nope"]);
    assert_eq!(bad.code, 2, "{bad}");
}

#[tokio::test]
async fn cli_changes_are_audited_as_cli() {
    let sb = Sandbox::new();
    sb.ok(&["agents", "add", "--name", "Support"]);
    sb.ok(&["numbers", "add", "+14155550100", "--agent", "Support"]);
    sb.ok(&["tokens", "create", "--name", "ci"]);
    let store = sb.store().await;
    let entries = store.audit_entries(10).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.create", "number.add", "agent.create"]);
    assert!(entries.iter().all(|e| e.actor == "cli"));
    assert!(
        !entries.iter().any(|e| e.detail.to_string().contains("sb_")),
        "no secrets in the audit log"
    );
}

#[test]
fn doctor_passes_on_a_fresh_directory() {
    let sb = Sandbox::new();
    // Port 0: the bind test cannot collide with whatever else runs here.
    let run = sb
        .cmd(&["doctor"])
        .env("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_eq!(run.code, 0, "{run}");
    for check in [
        "config",
        "data dir",
        "secret key",
        "database",
        "http",
        "sip",
        "salesforce",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok   {check}: "))),
            "no ok line for {check}:\n{run}"
        );
    }
    assert!(!sb.data_dir().exists(), "doctor changes nothing");

    // After a start, the existing database is checked too.
    sb.ok(&["migrate"]);
    let run = common::Run::from(
        sb.cmd(&["doctor", "--json"])
            .env("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 0, "{run}");
    let checks = run.json();
    let db = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "database")
        .unwrap();
    assert_eq!(db["status"], "ok", "{db}");
    assert!(db["fix"].is_null());

    // An agent on Deepgram without a key: a warning naming it and the fix.
    let json = sb.path().join("cloud.json");
    std::fs::write(&json, r#"{"name":"Cloud","stt_provider":"deepgram"}"#).unwrap();
    sb.ok(&["agents", "add", "--from-json", json.to_str().unwrap()]);
    let run = common::Run::from(
        sb.cmd(&["doctor", "--json"])
            .env("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .unwrap(),
    );
    let checks = run.json();
    let providers = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "providers")
        .unwrap_or_else(|| panic!("{run}"));
    assert_eq!(providers["status"], "warn", "{providers}");
    let detail = providers["detail"].as_str().unwrap();
    assert!(
        detail.contains("Cloud") && detail.contains("Deepgram"),
        "{detail}"
    );
    assert!(providers["fix"].as_str().unwrap().contains("Speech & LLM"));
}

#[test]
fn doctor_fails_with_a_fix_for_bad_settings() {
    let sb = Sandbox::new();
    // A data dir below a regular file can never be created (even as root).
    let file = sb.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap().to_string();
    let run = common::Run::from(
        sb.bare_cmd(&["doctor"])
            .arg("--data-dir")
            .arg(file.join("data"))
            .env("SWITCHBOARD_HTTP_ADDR", &busy)
            .env("SWITCHBOARD_SALESFORCE_ORG_ID", "00D000000000001")
            .env("SWITCHBOARD_SIP_TLS_ADDR", "127.0.0.1:0")
            .env("SWITCHBOARD_SIP_TLS_CERT", &file)
            .env("SWITCHBOARD_SIP_TLS_KEY", &file)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{run}");
    let line = |check: &str| {
        run.stdout
            .lines()
            .find(|l| l.contains(&format!(" {check}: ")))
            .unwrap_or_else(|| panic!("no {check} line:\n{run}"))
            .to_string()
    };
    let data = line("data dir");
    assert!(data.starts_with("FAIL data dir: "), "{data}");
    assert!(
        data.contains("not a directory") && data.contains(" — ") && data.contains("--data-dir"),
        "{data}"
    );
    let http = line("http");
    assert!(
        http.starts_with(&format!("FAIL http: {busy} is already in use")),
        "{http}"
    );
    assert!(http.contains("change SWITCHBOARD_HTTP_ADDR"), "{http}");
    let sf = line("salesforce");
    assert!(
        sf.starts_with(
            "FAIL salesforce: missing salesforce.scrt_url, salesforce.deployment_name — "
        ),
        "{sf}"
    );
    assert!(sf.contains("SWITCHBOARD_SALESFORCE_SCRT_URL"), "{sf}");
    let tls = line("sip tls");
    assert!(
        tls.starts_with("FAIL sip tls: the certificate holds no `BEGIN CERTIFICATE` block"),
        "{tls}"
    );
    assert!(tls.contains("change SWITCHBOARD_SIP_TLS_CERT"), "{tls}");

    // An invalid value fails the config check, with the key named.
    let run = common::Run::from(
        sb.cmd(&["doctor", "--json"])
            .env("SWITCHBOARD_SALESFORCE_ORG_ID", "12345")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 1, "{run}");
    let checks = run.json();
    assert_eq!(checks[0]["check"], "config");
    assert_eq!(checks[0]["status"], "fail");
    assert!(checks[0]["detail"]
        .as_str()
        .unwrap()
        .contains("SWITCHBOARD_SALESFORCE_ORG_ID"));
    assert!(checks[0]["fix"].is_string());
}

#[test]
fn config_errors_exit_2_and_name_the_key() {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path().join("switchboard.toml"),
        "[http]\nadr = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let run = sb.run(&["agents", "list"]);
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(
        run.stderr.trim(),
        "config error: http.adr (in switchboard.toml) is not a known setting; did you mean http.addr?"
    );
    std::fs::remove_file(sb.path().join("switchboard.toml")).unwrap();

    let run = common::Run::from(
        sb.cmd(&["agents", "list"])
            .env("SWITCHBOARD_HTTP_ADR", "127.0.0.1:9")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(
        run.stderr.trim(),
        "config error: SWITCHBOARD_HTTP_ADR is not a known setting; did you mean SWITCHBOARD_HTTP_ADDR?"
    );

    let run = sb.run(&["agents", "list", "--config", "missing.toml"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr
            .starts_with("config error: cannot read missing.toml"),
        "{run}"
    );
}

#[test]
fn unreachable_database_is_one_line_and_exit_2() {
    let sb = Sandbox::new();
    for command in [&["serve"][..], &["migrate"][..]] {
        let run = common::Run::from(
            sb.cmd(command)
                .env(
                    "SWITCHBOARD_DATABASE_URL",
                    "postgresql://x:y@127.0.0.1:1/db",
                )
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 2, "{run}");
        assert_eq!(run.stderr.lines().count(), 1, "one line: {run}");
        assert!(
            run.stderr
                .starts_with("error: database postgresql://x:***@127.0.0.1:1/db is unreachable"),
            "{run}"
        );
        assert!(
            run.stderr.contains("SWITCHBOARD_DATABASE_URL"),
            "says what to change: {run}"
        );
        assert!(!run.stderr.contains(":y@"), "the password is hidden: {run}");
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
}

#[test]
fn busy_http_port_exits_2_naming_the_address() {
    let sb = Sandbox::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = listener.local_addr().unwrap().to_string();
    let run = common::Run::from(
        sb.cmd(&["serve", "--http", &busy])
            .env("SWITCHBOARD_ADMIN_PASSWORD", "correct horse battery")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stdout.is_empty(), "nothing is announced: {run}");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("error: cannot listen on {busy}: the address is already in use (is another switchboard running?) — change --http")
    );
}

#[test]
fn unwritable_data_dir_names_the_directory() {
    let sb = Sandbox::new();
    let file = sb.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let dir = file.join("data");
    let run = common::Run::from(
        sb.bare_cmd(&["agents", "list"])
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.starts_with(&format!(
            "error: storage.data_dir {} cannot be created",
            dir.display()
        )),
        "{run}"
    );
    assert!(run.stderr.contains("--data-dir"), "{run}");
}

/// The same commands against PostgreSQL when the test server is configured
/// (`make test` runs the suite under `scripts/with-postgres.sh`).
#[tokio::test]
async fn commands_work_on_postgresql() {
    let Some(url) = switchboard_store::testing::fresh_postgres_url()
        .await
        .unwrap()
    else {
        eprintln!("note: SWITCHBOARD_TEST_DATABASE_URL is not set; PostgreSQL CLI test skipped");
        return;
    };
    let sb = Sandbox::new();
    let run_pg = |args: &[&str]| {
        common::Run::from(
            sb.cmd(args)
                .env("SWITCHBOARD_DATABASE_URL", &url)
                .output()
                .unwrap(),
        )
    };
    let migrated = run_pg(&["migrate"]);
    assert_eq!(migrated.code, 0, "{migrated}");
    assert!(
        migrated.stdout.contains("postgresql at postgresql://"),
        "{migrated}"
    );
    assert!(
        migrated.stdout.contains(":***@"),
        "password hidden: {migrated}"
    );
    let added = run_pg(&["agents", "add", "--name", "Support", "--json"]);
    assert_eq!(added.code, 0, "{added}");
    let listed = run_pg(&["agents", "list", "--json"]);
    assert_eq!(listed.json()[0]["name"], "Support");
    let doctor = common::Run::from(
        sb.cmd(&["doctor"])
            .env("SWITCHBOARD_DATABASE_URL", &url)
            .env("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:0")
            .output()
            .unwrap(),
    );
    assert_eq!(doctor.code, 0, "{doctor}");
    assert!(
        doctor.stdout.contains("ok   database: postgresql at "),
        "{doctor}"
    );
}
