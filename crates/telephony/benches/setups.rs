//! Answered call setups per second (issue 5, "Benchmarks"): sipp as the
//! caller, against our SIP endpoint and, as the baseline in the same run,
//! against a bare `sipp -sn uas`.
//!
//! `cargo bench -p switchboard-telephony --bench setups`
//!
//! - **setups**: for each rate R (default 100, 200, 400, 800 calls/s;
//!   `SETUP_RATES=100,200`) sipp places `R × SETUP_SECS` calls (default 4 s
//!   worth) with `tests/sipp/uac_load.xml` (INVITE with G.711 SDP → 100/180/200
//!   → ACK → 500 ms → BYE). Against us each call is admitted through the
//!   trunk allow-list, routed to an agent, given RTP ports, answered, and
//!   written as a session row (created, answered, ended) in SQLite in a temp
//!   dir; the handler holds the call until BYE. Against the baseline sipp
//!   answers from memory. Reported: answered setups per second (from sipp's
//!   per-call response-time trace: successful INVITE→200 per second between
//!   the first and last answer), % failed calls, INVITE→200 p50/p99, CPU
//!   per call setup (ours: this process's user+system time, SQLite included;
//!   the baseline: the UAS sipp's), and ours as a ratio of the baseline.
//!   `SETUP_RECORDINGS_DIR=/dev/shm` writes the per-call recordings there
//!   instead of the temp dir, to tell the disk's cost of a file create from
//!   ours.
//! - **idle**: `SETUP_IDLE_CALLS` (default 500) calls held open (the same
//!   scenario with a 12 s pause, no RTP); VmRSS growth of this process per
//!   held call (SIP dialog, session, RTP sockets, the handler's task).
//!
//! Needs `sipp` (Debian `sip-tester`); without it the bench says so and
//! exits. Prints a table and writes `$CARGO_TARGET_DIR/bench/telephony-setups.json`.
//! Timing is reported, never asserted: on a shared 2-core machine, sipp (the
//! UAC, and the UAS in the baseline) competes with the server for the cores.

#![allow(clippy::unwrap_used)] // reason: a benchmark aborts on setup failure

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use switchboard_model::{AgentInput, Region, TrunkInput, E164};
use switchboard_rtp::{MediaConfig, MediaEvent, PortRange};
use switchboard_store::testing::sqlite_store;
use switchboard_telephony::{ActiveCall, CallHandler, SipConfig, Telephony};

/// The allocator the `switchboard` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NUMBER: &str = "+14155550100";
const SERVICE: &str = "14155550100";

fn main() -> Result<()> {
    if std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("sipp not found (apt-get install sip-tester): nothing to measure");
        return Ok(());
    }
    let rates: Vec<u32> = env_list("SETUP_RATES").unwrap_or_else(|| vec![100, 200, 400, 800]);
    let secs: u32 = env_num("SETUP_SECS").unwrap_or(4);
    let idle: u32 = env_num("SETUP_IDLE_CALLS").unwrap_or(500);
    let workers = env_num("SETUP_WORKERS").unwrap_or(2) as usize;
    let pin = pin_to_one_core()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    if let Some((ours, sipp)) = pin {
        eprintln!("pinned: this process (SIP, media, SQLite, {workers} workers) on CPU {ours}, sipp on CPU {sipp}");
    }
    runtime.block_on(async move {
        let work = tempfile::tempdir()?;
        let load = scenario(work.path(), "load.xml", 500)?;
        let mut rows = Vec::new();
        for &rate in &rates {
            let calls = rate * secs;
            let base = baseline(&load, rate, calls).await;
            let ours = against_us(&load, rate, calls).await;
            let row = Row {
                rate,
                calls,
                ours,
                base,
            };
            row.print_progress();
            rows.push(row);
        }
        let held = scenario(work.path(), "hold.xml", 12_000)?;
        let idle = idle_calls(&held, idle).await;
        print_table(&rows, &idle);
        write_json(&rows, &idle, secs);
        Ok(())
    })
}

/// `SETUP_PIN=1`: this process (every thread it will start) on the last
/// CPU, sipp on the others, so "setups per core" is measured on one core
/// rather than inferred from CPU time. Returns (our CPU, sipp's CPUs).
fn pin_to_one_core() -> Result<Option<(usize, String)>> {
    if std::env::var("SETUP_PIN").map_or(true, |v| v != "1") {
        return Ok(None);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        bail!("SETUP_PIN=1 needs two CPUs (one for us, one for sipp)");
    }
    let ours = cpus - 1;
    let mut set = nix::sched::CpuSet::new();
    set.set(ours)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
    let sipp = if cpus == 2 {
        "0".to_string()
    } else {
        format!("0-{}", cpus - 2)
    };
    let _ = SIPP_CPUS.set(sipp.clone());
    Ok(Some((ours, sipp)))
}

/// The CPUs sipp runs on when pinned.
static SIPP_CPUS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// sipp, on the CPUs [`pin_to_one_core`] left it (through `taskset`, which
/// may widen a child's affinity beyond ours).
fn sipp_command() -> tokio::process::Command {
    match SIPP_CPUS.get() {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus, "sipp"]);
            c
        }
        None => tokio::process::Command::new("sipp"),
    }
}

/// One sipp run, as sipp and the process saw it.
#[derive(Debug, Clone, Default)]
struct Outcome {
    successful: u64,
    failed: u64,
    /// Answered setups per second between the first and the last answer.
    cps: f64,
    setup_p50_ms: f64,
    setup_p99_ms: f64,
    /// CPU time of the answering side per successful call, in µs.
    cpu_us_per_call: f64,
    /// Session rows that ended (ours only).
    sessions_ended: u64,
    wall_secs: f64,
    error: Option<String>,
}

impl Outcome {
    fn failed_pct(&self) -> f64 {
        let total = self.successful + self.failed;
        if total == 0 {
            100.0
        } else {
            100.0 * self.failed as f64 / total as f64
        }
    }

    fn json(&self) -> Value {
        json!({
            "successful": self.successful,
            "failed": self.failed,
            "failed_pct": self.failed_pct(),
            "answered_cps": self.cps,
            "setup_p50_ms": self.setup_p50_ms,
            "setup_p99_ms": self.setup_p99_ms,
            "cpu_us_per_call": self.cpu_us_per_call,
            "sessions_ended": self.sessions_ended,
            "wall_secs": self.wall_secs,
            "error": self.error,
        })
    }
}

struct Row {
    rate: u32,
    calls: u32,
    ours: Outcome,
    base: Outcome,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.base.cps > 0.0 {
            self.ours.cps / self.base.cps
        } else {
            f64::NAN
        }
    }

    fn print_progress(&self) {
        eprintln!(
            "rate {}: ours {:.0} cps ({:.1} % failed), sipp uas {:.0} cps ({:.1} % failed){}{}",
            self.rate,
            self.ours.cps,
            self.ours.failed_pct(),
            self.base.cps,
            self.base.failed_pct(),
            self.ours
                .error
                .as_deref()
                .map(|e| format!("; ours: {e}"))
                .unwrap_or_default(),
            self.base
                .error
                .as_deref()
                .map(|e| format!("; base: {e}"))
                .unwrap_or_default(),
        );
    }
}

/// The same calls against a bare sipp UAS.
async fn baseline(load: &Path, rate: u32, calls: u32) -> Outcome {
    let port = free_udp_port();
    let mut uas = match sipp_command()
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-nostdin",
        ])
        .current_dir(load.parent().unwrap_or(Path::new(".")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                error: Some(format!("cannot start sipp uas: {e}")),
                ..Default::default()
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = uas.id();
    let cpu0 = pid.map(proc_cpu_secs).unwrap_or(0.0);
    let mut out = run_uac(load, &format!("127.0.0.1:{port}"), rate, calls).await;
    let cpu = pid.map(proc_cpu_secs).unwrap_or(0.0) - cpu0;
    if out.successful > 0 {
        out.cpu_us_per_call = cpu * 1e6 / out.successful as f64;
    }
    let _ = uas.start_kill();
    let _ = uas.wait().await;
    out
}

/// The calls against our endpoint, with session rows in SQLite.
async fn against_us(load: &Path, rate: u32, calls: u32) -> Outcome {
    let server = match Server::start().await {
        Ok(s) => s,
        Err(e) => {
            return Outcome {
                error: Some(format!("cannot start the server: {e:#}")),
                ..Default::default()
            }
        }
    };
    let cpu0 = self_cpu_secs();
    let mut out = run_uac(load, &server.tel.local_addr().to_string(), rate, calls).await;
    // Count the work the calls left behind (BYE handling, session end) too.
    let ended = server
        .wait_ended(out.successful, Duration::from_secs(20))
        .await;
    let cpu = self_cpu_secs() - cpu0;
    out.sessions_ended = ended;
    if out.successful > 0 {
        out.cpu_us_per_call = cpu * 1e6 / out.successful as f64;
    }
    server.tel.shutdown(Duration::from_secs(2)).await;
    out
}

/// Holds `n` calls open and measures what each costs in memory.
async fn idle_calls(held: &Path, n: u32) -> Value {
    let server = match Server::start().await {
        Ok(s) => s,
        Err(e) => return json!({ "error": format!("cannot start the server: {e:#}") }),
    };
    // Warm up allocator, store pool and SIP stack with a few calls.
    let load = held.with_file_name("load.xml");
    let _ = run_uac(&load, &server.tel.local_addr().to_string(), 50, 20).await;
    server.wait_ended(20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let target = server.tel.local_addr().to_string();
    let held_owned = held.to_path_buf();
    let uac = tokio::spawn(async move { run_uac(&held_owned, &target, 200, n).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.tel.live_calls() < n as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = server.tel.live_calls();
    let during = rss_kib();
    let outcome = uac.await.unwrap_or_default();
    server
        .wait_ended(outcome.successful, Duration::from_secs(20))
        .await;
    let after = rss_kib();
    server.tel.shutdown(Duration::from_secs(2)).await;
    let per_call = if live > 0 {
        during.saturating_sub(before) as f64 / live as f64
    } else {
        f64::NAN
    };
    json!({
        "calls_requested": n,
        "calls_held": live,
        "rss_before_kib": before,
        "rss_held_kib": during,
        "rss_after_kib": after,
        "kib_per_idle_call": per_call,
        "sipp": outcome.json(),
    })
}

/// Runs the sipp UAC: `calls` calls at `rate` per second.
async fn run_uac(scenario: &Path, target: &str, rate: u32, calls: u32) -> Outcome {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Outcome {
                error: Some(format!("temp dir: {e}")),
                ..Default::default()
            }
        }
    };
    let file = dir.path().join("uac.xml");
    if let Err(e) = std::fs::copy(scenario, &file) {
        return Outcome {
            error: Some(format!("copy scenario: {e}")),
            ..Default::default()
        };
    }
    let port = free_udp_port().to_string();
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        sipp_command()
            .args([
                target,
                "-sf",
                "uac.xml",
                "-s",
                SERVICE,
                "-i",
                "127.0.0.1",
                "-p",
                &port,
                "-m",
                &calls.to_string(),
                "-r",
                &rate.to_string(),
                "-l",
                "20000",
                "-timeout",
                "90s",
                "-nostdin",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-max_socket",
                "20000",
            ])
            .current_dir(dir.path())
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await;
    let wall_secs = started.elapsed().as_secs_f64();
    let out = match result {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Outcome {
                error: Some(format!("sipp: {e}")),
                ..Default::default()
            }
        }
        Err(_) => {
            return Outcome {
                error: Some("sipp did not finish in 120 s".into()),
                ..Default::default()
            }
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let successful = cumulative(&stdout, "Successful call").unwrap_or(0);
    let failed = cumulative(&stdout, "Failed call").unwrap_or(0);
    let (cps, p50, p99) = rtt_stats(dir.path());
    Outcome {
        successful,
        failed,
        cps,
        setup_p50_ms: p50,
        setup_p99_ms: p99,
        wall_secs,
        error: (successful == 0).then(|| {
            let tail: Vec<&str> = stdout.lines().rev().take(15).collect();
            format!(
                "no successful call (exit {}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        }),
        ..Default::default()
    }
}

/// The cumulative column of a line of sipp's final statistics screen.
fn cumulative(screen: &str, counter: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(counter))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|v| v.trim().parse().ok())
}

/// From sipp's `-trace_rtt` file: (answered per second between the first
/// and last answer, INVITE→200 p50, p99).
fn rtt_stats(dir: &Path) -> (f64, f64, f64) {
    let Some(path) = std::fs::read_dir(dir).ok().and_then(|rd| {
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_rtt.csv"))
    }) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut at = Vec::new();
    let mut rt = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(';');
        let (Some(date), Some(resp)) = (f.next(), f.next()) else {
            continue;
        };
        if let (Ok(d), Ok(r)) = (date.trim().parse::<f64>(), resp.trim().parse::<f64>()) {
            at.push(d);
            rt.push(r);
        }
    }
    if at.len() < 2 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    at.sort_by(f64::total_cmp);
    let span = (at[at.len() - 1] - at[0]) / 1000.0;
    let cps = if span > 0.0 {
        (at.len() - 1) as f64 / span
    } else {
        f64::NAN
    };
    (cps, percentile(&rt, 50.0), percentile(&rt, 99.0))
}

/// Our endpoint: a fresh SQLite store with one trunk, number and agent.
struct Server {
    _dir: tempfile::TempDir,
    /// Where recordings go when `SETUP_RECORDINGS_DIR` moves them.
    _recordings: Option<tempfile::TempDir>,
    /// A second connection to the store's SQLite file, for counting rows
    /// (the store's listing is capped at 500 rows).
    db: sqlx::SqlitePool,
    tel: Telephony,
}

impl Server {
    async fn start() -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let store = sqlite_store(dir.path()).await?;
        let agent = store
            .create_agent(
                &AgentInput {
                    name: "Support".into(),
                    max_concurrent_calls: Some(10_000),
                    ..Default::default()
                }
                .validate(Region::default())?,
            )
            .await?;
        store
            .add_number(&E164::parse_strict(NUMBER)?, Some(agent.id), "main")
            .await?;
        store
            .create_trunk(
                &TrunkInput {
                    name: "local".into(),
                    host: "127.0.0.1".into(),
                    allowed_cidrs: vec!["127.0.0.0/8".into()],
                    ..Default::default()
                }
                .validate(Region::default())?,
            )
            .await?;
        let cfg = SipConfig {
            listen: "127.0.0.1:0".parse()?,
            media: MediaConfig {
                bind_ip: "127.0.0.1".parse()?,
                // Away from the sipp tests' 20000-29999, should they run too.
                ports: PortRange::new(40_000, 59_998),
                ..Default::default()
            },
            max_calls_per_agent: 100_000,
            recordings_dir: dir.path().join("recordings"),
            ..Default::default()
        };
        // `SETUP_RECORDINGS_DIR=/dev/shm` tells what creating a file per
        // call costs on this machine's disk apart from our own work.
        let recordings = std::env::var_os("SETUP_RECORDINGS_DIR")
            .map(tempfile::tempdir_in)
            .transpose()?;
        let cfg = SipConfig {
            recordings_dir: recordings
                .as_ref()
                .map_or(cfg.recordings_dir.clone(), |d| d.path().to_path_buf()),
            ..cfg
        };
        let tel = Telephony::start(store, cfg, Arc::new(Hold)).await?;
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let db = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await?;
        Ok(Server {
            _dir: dir,
            _recordings: recordings,
            db,
            tel,
        })
    }

    /// Waits (bounded) until `n` session rows have ended; returns how many did.
    async fn wait_ended(&self, n: u64, limit: Duration) -> u64 {
        let deadline = Instant::now() + limit;
        loop {
            let ended = self.ended().await.unwrap_or(0);
            if ended >= n || Instant::now() > deadline {
                return ended;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Session rows answered and ended.
    async fn ended(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sessions WHERE answered_at IS NOT NULL AND ended_at IS NOT NULL",
        )
        .fetch_one(&self.db)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The engine's stand-in: holds the call (draining its media) until it ends.
struct Hold;

impl CallHandler for Hold {
    fn handle(
        &self,
        mut call: ActiveCall,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut ended = call.control.ended();
            loop {
                tokio::select! {
                    ev = call.media.events.recv() => match ev {
                        Some(MediaEvent::Audio(_)) | Some(_) => {}
                        None => break,
                    },
                    r = ended.changed() => {
                        if r.is_err() || ended.borrow().is_some() { break }
                    }
                }
            }
        })
    }
}

/// Writes sipp's `uac_load.xml` with the pause between ACK and BYE set to
/// `pause_ms`.
fn scenario(dir: &Path, name: &str, pause_ms: u32) -> Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uac_load.xml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    if !text.contains("<pause milliseconds=\"500\"/>") {
        bail!("{} no longer has the 500 ms pause", source.display());
    }
    let text = text.replace(
        "<pause milliseconds=\"500\"/>",
        &format!("<pause milliseconds=\"{pause_ms}\"/>"),
    );
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn print_table(rows: &[Row], idle: &Value) {
    println!();
    println!(
        "{:>6} {:>6} | {:>9} {:>7} {:>8} {:>8} {:>9} {:>7} | {:>9} {:>7} {:>8} {:>9} | {:>6}",
        "rate",
        "calls",
        "ours cps",
        "fail %",
        "p50 ms",
        "p99 ms",
        "µs cpu",
        "rows",
        "uas cps",
        "fail %",
        "p50 ms",
        "µs cpu",
        "ratio"
    );
    for r in rows {
        println!(
            "{:>6} {:>6} | {:>9.0} {:>7.2} {:>8.1} {:>8.1} {:>9.0} {:>7} | {:>9.0} {:>7.2} {:>8.1} {:>9.0} | {:>6.2}",
            r.rate,
            r.calls,
            r.ours.cps,
            r.ours.failed_pct(),
            r.ours.setup_p50_ms,
            r.ours.setup_p99_ms,
            r.ours.cpu_us_per_call,
            r.ours.sessions_ended,
            r.base.cps,
            r.base.failed_pct(),
            r.base.setup_p50_ms,
            r.base.cpu_us_per_call,
            r.ratio(),
        );
        for e in [&r.ours.error, &r.base.error].into_iter().flatten() {
            println!("        error: {e}");
        }
    }
    println!(
        "idle calls held: {} of {}; VmRSS {} → {} KiB: {:.1} KiB per idle call (target < 200 KiB)",
        idle["calls_held"],
        idle["calls_requested"],
        idle["rss_before_kib"],
        idle["rss_held_kib"],
        idle["kib_per_idle_call"].as_f64().unwrap_or(f64::NAN),
    );
    println!("(ratio = our answered cps / sipp uas answered cps at the same offered rate; µs cpu = CPU per answered call of the answering side)");
}

fn write_json(rows: &[Row], idle: &Value, secs: u32) {
    let doc = json!({
        "bench": "telephony-setups",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "seconds_per_rate": secs,
        "rates": rows.iter().map(|r| json!({
            "offered_cps": r.rate,
            "calls": r.calls,
            "ours": r.ours.json(),
            "sipp_uas": r.base.json(),
            "ratio_cps": if r.ratio().is_finite() { json!(r.ratio()) } else { Value::Null },
        })).collect::<Vec<_>>(),
        "idle": idle,
    });
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target"))
        .join("bench");
    let path = dir.join("telephony-setups.json");
    // NaN is not JSON: serde_json writes it as null.
    match std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()))
    {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (`/proc/<pid>/stat`).
fn proc_cpu_secs(pid: u32) -> f64 {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

fn self_cpu_secs() -> f64 {
    stat_cpu("/proc/self/stat")
}

fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 (utime) and 15 (stime), counted from 1; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn env_list(name: &str) -> Option<Vec<u32>> {
    let v: Vec<u32> = std::env::var(name)
        .ok()?
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    (!v.is_empty()).then_some(v)
}

fn env_num(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}
