//! Handoff delivery benchmark (`make bench`): how long from the handoff
//! commit until the conversation holds the whole transcript, and how many
//! handoffs per second the outbox workers deliver. Salesforce is the built-in
//! sandbox served on 127.0.0.1; no traffic leaves the machine.
//!
//! It is a report, not a test: nothing is asserted. It prints a table with
//! the targets from the issue next to the numbers (PASS/MISS) and writes the
//! same as JSON to `$BENCH_OUT` if set, else
//! `$CARGO_TARGET_DIR/bench/handoff-delivery.json` (else
//! `target/bench/handoff-delivery.json` in the workspace).
//!
//! # Layout
//! [`run`] goes through three phases, each case on a fresh store and a fresh
//! sandbox (a [`Rig`]):
//! 1. latency at 0 ms injected latency, for 10-, 40- and 200-turn
//!    transcripts, one message per turn and packed, on SQLite and (when
//!    `SWITCHBOARD_TEST_DATABASE_URL` is set, as `scripts/with-postgres.sh`
//!    does) PostgreSQL: one worker, one handoff at a time;
//! 2. the same at 100 ms per sandbox request (`Fault::Latency`), on SQLite:
//!    a handoff is sequential, so independent handoffs run side by side (one
//!    worker each) and each is timed from its own commit;
//! 3. throughput: 300 ten-turn handoffs committed up front (sessions, turns
//!    and handoffs are not timed), then 1 or 4 workers started and timed
//!    until every handoff is delivered.
//!
//! # What is measured
//! *Delivered*: from the moment `request_handoff` returns (handoff and job
//! committed, workers notified) until the store shows the handoff
//! `Delivered` — after the last message's acknowledgement is recorded and the
//! job finished. A watcher thread polls the store with `std::thread::sleep`
//! (tokio's timer rounds up to whole milliseconds) every 0.5 ms, or 2 ms when
//! handoffs overlap; the interval is the resolution of the numbers.
//! *Visible*: until the same watcher first finds every message in the
//! sandbox conversation — the moment a rep could read the full transcript.
//! (The sandbox's own `received_at_ms` cannot serve: it is kept strictly
//! increasing per conversation, so it runs ahead of the clock when messages
//! arrive faster than one per millisecond.)
//!
//! Percentiles are nearest-rank, so with n < 100 the p99 is the slowest run.
//!
//! `BENCH_FILTER=<substring>` runs only the cases whose label contains it,
//! e.g. `throughput postgres` or `latency sqlite 100 ms packed`.
//!
//! Every loop is bounded by a count and a deadline; a handoff that does not
//! arrive in time counts as an error in its row instead of hanging the bench.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchboard_handoff::intake::{record_text_call, request_handoff, TextCallInput, TurnInput};
use switchboard_handoff::policy::Backoff;
use switchboard_handoff::render::conversation_id;
use switchboard_handoff::{
    ConfigOverrides, SalesforceSettings, SandboxTarget, Worker, WorkerConfig,
};
use switchboard_model::{
    AgentInput, HandoffId, HandoffInput, HandoffStatus, PreferredChannel, Region, SessionId,
    Speaker, SystemClock, Timestamp,
};
use switchboard_salesforce::{Fault, RepBehaviour, Sandbox, SandboxConfig};
use switchboard_store::{HandoffFilter, Store, HANDOFF_JOB};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

const TURN_COUNTS: [usize; 3] = [10, 40, 200];
/// Runs per case at 0 ms injected latency.
const RUNS_AT_0MS: usize = 50;
/// The injected latency of the slow-link cases.
const SLOW_MS: u64 = 100;
/// Unmeasured handoffs per case first (connections, statements, caches).
const WARMUP: usize = 2;
const THROUGHPUT_HANDOFFS: usize = 300;
const THROUGHPUT_TURNS: usize = 10;
const THROUGHPUT_WORKERS: [usize; 2] = [1, 4];
/// How long all of one throughput case may take before it is reported as timed out.
const THROUGHPUT_DEADLINE: Duration = Duration::from_secs(120);
/// How often a throughput run checks whether the outbox is empty (its resolution).
const THROUGHPUT_POLL: Duration = Duration::from_millis(5);
/// Sequential `SELECT 1`s after a throughput run, for the database round trip.
const DB_PINGS: usize = 300;

const TARGET_40_TURNS_P99_MS: f64 = 150.0;
const TARGET_VISIBLE_P99_MS: f64 = 1000.0;
const TARGET_PG_HANDOFFS_PER_S: f64 = 200.0;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// Says what was being done when an error happened (`anyhow` is not a
/// dependency of this crate).
trait Context<T> {
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let out = output_path();
    let machine = machine_info();
    println!(
        "handoff delivery benchmark — {} CPUs, git {}, {}",
        machine["nproc"],
        machine["git_rev"].as_str().unwrap_or("unknown"),
        machine["date"].as_str().unwrap_or(""),
    );
    let postgres = std::env::var(switchboard_store::testing::POSTGRES_URL_VAR).is_ok();
    if !postgres {
        println!(
            "note: {} is not set; PostgreSQL cases are skipped (make bench sets it)",
            switchboard_store::testing::POSTGRES_URL_VAR
        );
    }

    let mut cases = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && !postgres {
            continue;
        }
        for pack in [false, true] {
            for turns in TURN_COUNTS {
                cases.push(LatencyCase {
                    backend,
                    latency_ms: 0,
                    pack,
                    turns,
                    runs: RUNS_AT_0MS,
                    concurrency: 1,
                    poll: Duration::from_micros(500),
                });
            }
        }
    }
    for pack in [false, true] {
        for turns in TURN_COUNTS {
            // 200 turns one message each is ~20 s per handoff at 100 ms.
            let (runs, concurrency) = if !pack && turns == 200 {
                (5, 5)
            } else {
                (20, 10)
            };
            cases.push(LatencyCase {
                backend: Backend::Sqlite,
                latency_ms: SLOW_MS,
                pack,
                turns,
                runs,
                concurrency,
                poll: Duration::from_millis(2),
            });
        }
    }

    let only = std::env::var("BENCH_FILTER").unwrap_or_default();
    let mut latency = Vec::new();
    for case in &cases {
        if !format!("latency {}", case.label()).contains(&only) {
            continue;
        }
        eprintln!("bench: latency {}", case.label());
        let row = measure_latency(case)
            .await
            .context(format!("latency case {}", case.label()))?;
        latency.push(row);
    }

    let mut throughput = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for workers in THROUGHPUT_WORKERS {
            let label = format!("throughput {} {workers} workers", backend.name());
            if !label.contains(&only) {
                continue;
            }
            eprintln!("bench: {label}");
            let row = if backend == Backend::Postgres && !postgres {
                ThroughputRow::skipped(backend, workers)
            } else {
                measure_throughput(backend, workers).await.context(&label)?
            };
            throughput.push(row);
        }
    }

    let targets = targets(&latency, &throughput);
    print_tables(&latency, &throughput, &targets);
    let report = json!({
        "bench": "handoff-delivery",
        "filter": (!only.is_empty()).then_some(&only),
        "machine": machine,
        "method": {
            "delivered_ms": "request_handoff returned → store shows status Delivered (last ack recorded, job finished); store polled every poll_us",
            "visible_ms": "request_handoff returned → first poll that finds every message in the sandbox conversation (same poll as delivered_ms, same clock)",
            "request_handoff_ms": "duration of request_handoff itself (the commit transaction and a read), not part of delivered_ms",
            "percentiles": "nearest rank; with n < 100 p99 is the maximum",
            "sandbox": "built-in MIAW sandbox on 127.0.0.1, rep never accepts (accept_after None); latency injected with Fault::Latency on every request",
            "throughput": "N handoffs committed before the workers start; from starting the workers until all are Delivered (outbox polled every 5 ms)",
            "worker": "idle_poll 10 ms, woken by the notifier request_handoff pokes",
        },
        "latency": latency.iter().map(LatencyRow::to_json).collect::<Vec<_>>(),
        "throughput": throughput.iter().map(ThroughputRow::to_json).collect::<Vec<_>>(),
        "targets": targets.iter().map(TargetResult::to_json).collect::<Vec<_>>(),
        "bench_seconds": started.elapsed().as_secs_f64(),
        "loadavg_at_end": loadavg(),
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).context(format!("create {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .context(format!("write {}", out.display()))?;
    println!(
        "\nJSON: {} (bench took {:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Latency

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
struct LatencyCase {
    backend: Backend,
    latency_ms: u64,
    pack: bool,
    turns: usize,
    runs: usize,
    /// Handoffs in flight at once (and workers).
    concurrency: usize,
    poll: Duration,
}

impl LatencyCase {
    fn mode(&self) -> &'static str {
        if self.pack {
            "packed"
        } else {
            "per-turn"
        }
    }

    fn label(&self) -> String {
        format!(
            "{} {} ms {} {} turns",
            self.backend.name(),
            self.latency_ms,
            self.mode(),
            self.turns
        )
    }

    /// How long one handoff may take before it counts as an error.
    fn timeout(&self) -> Duration {
        let requests = u64::try_from(self.turns)
            .unwrap_or(u64::MAX)
            .saturating_add(4);
        Duration::from_secs(30) + Duration::from_millis(requests * self.latency_ms * 3)
    }
}

struct LatencyRow {
    case: LatencyCase,
    delivered_ms: Vec<f64>,
    visible_ms: Vec<f64>,
    request_handoff_ms: Vec<f64>,
    /// Runs that did not end Delivered in time, with what was seen.
    errors: Vec<String>,
    messages: Option<i64>,
    requests_per_handoff: f64,
}

impl LatencyRow {
    fn to_json(&self) -> Value {
        let c = &self.case;
        json!({
            "backend": c.backend.name(),
            "injected_latency_ms": c.latency_ms,
            "mode": c.mode(),
            "pack_turns": c.pack,
            "turns": c.turns,
            "messages": self.messages,
            "sandbox_requests_per_handoff": self.requests_per_handoff,
            "runs": c.runs,
            "n": self.delivered_ms.len(),
            "errors": self.errors,
            "concurrency": c.concurrency,
            "workers": c.concurrency,
            "poll_us": c.poll.as_micros() as u64,
            "delivered_ms": Stats::of(&self.delivered_ms).to_json(),
            "visible_ms": Stats::of(&self.visible_ms).to_json(),
            "request_handoff_ms": Stats::of(&self.request_handoff_ms).to_json(),
        })
    }
}

async fn measure_latency(case: &LatencyCase) -> Result<LatencyRow> {
    let Some(rig) = Rig::new(case.backend, case.pack, case.concurrency).await? else {
        return Err(format!("no {} store", case.backend.name()).into());
    };
    let warm = rig.record_sessions(WARMUP, 10).await?;
    let _ = rig
        .hand_off_and_wait(&warm, 1, case.poll, case.timeout())
        .await?;
    let sessions = rig.record_sessions(case.runs, case.turns).await?;
    if case.latency_ms > 0 {
        rig.sandbox.faults().push(Fault::Latency {
            ms: case.latency_ms,
        });
    }
    let requests_before = rig.sandbox.request_count();
    let runs = rig
        .hand_off_and_wait(&sessions, case.concurrency, case.poll, case.timeout())
        .await?;
    let requests = rig.sandbox.request_count() - requests_before;
    rig.sandbox.faults().clear();

    let mut row = LatencyRow {
        case: case.clone(),
        delivered_ms: Vec::new(),
        visible_ms: Vec::new(),
        request_handoff_ms: Vec::new(),
        errors: Vec::new(),
        messages: None,
        requests_per_handoff: requests as f64 / case.runs.max(1) as f64,
    };
    for r in &runs {
        row.request_handoff_ms.push(ms(r.request_took));
        match (r.status, r.done) {
            (Some(HandoffStatus::Delivered), Some(done)) => {
                row.delivered_ms.push(ms(done - r.committed));
                row.visible_ms.extend(
                    r.visible
                        .map(|v| ms(v.saturating_duration_since(r.committed))),
                );
                row.messages = row.messages.or(r.messages);
            }
            (status, _) => row.errors.push(format!(
                "handoff {} ended {}",
                r.id,
                status.map_or("unread", |s| s.as_str())
            )),
        }
    }
    rig.shutdown().await;
    Ok(row)
}

/// One measured handoff.
struct Run {
    id: HandoffId,
    session: SessionId,
    /// When `request_handoff` returned.
    committed: Instant,
    request_took: Duration,
    /// Give up watching at this instant.
    deadline: Instant,
    /// Messages the worker planned, once the store shows it.
    messages: Option<i64>,
    /// First poll that found every message in the sandbox.
    visible: Option<Instant>,
    /// First poll that found the handoff Delivered (or another final state).
    done: Option<Instant>,
    status: Option<HandoffStatus>,
}

/// Polls the store and the sandbox from its own thread, so the interval can
/// be finer than tokio's millisecond timer. Handoffs to watch arrive on a
/// channel; each leaves when it reaches a final state or its deadline.
///
/// Each sweep reads the handoff row first, then the sandbox: a handoff seen
/// Delivered was visible no later than that read, so `visible <= done`.
fn spawn_watcher(
    store: Store,
    sandbox: Sandbox,
    poll: Duration,
) -> (
    std_mpsc::Sender<Run>,
    mpsc::UnboundedReceiver<Run>,
    std::thread::JoinHandle<()>,
) {
    let runtime = tokio::runtime::Handle::current();
    let (watch_tx, watch_rx) = std_mpsc::channel::<Run>();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let thread = std::thread::spawn(move || {
        // A backstop: no case comes near this.
        let give_up = Instant::now() + Duration::from_secs(600);
        let mut pending: Vec<Run> = Vec::new();
        let mut open = true;
        while Instant::now() < give_up {
            while open {
                match watch_rx.try_recv() {
                    Ok(run) => pending.push(run),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            if pending.is_empty() {
                if !open {
                    return;
                }
                match watch_rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(run) => pending.push(run),
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            let mut i = 0;
            while i < pending.len() {
                let run = &mut pending[i];
                let asked = Instant::now();
                let seen = runtime.block_on(store.handoff(run.id)).ok();
                run.status = seen.as_ref().map(|h| h.status);
                run.messages = seen
                    .as_ref()
                    .and_then(|h| h.messages_total)
                    .or(run.messages);
                let last = matches!(
                    run.status,
                    Some(
                        HandoffStatus::Delivered
                            | HandoffStatus::DeadLetter
                            | HandoffStatus::NotConfigured
                    )
                );
                if run.status == Some(HandoffStatus::Delivered) {
                    // The state was read after `asked`; the previous sweep
                    // (one poll earlier) did not see it yet.
                    run.done = Some(asked);
                    run.visible = run.visible.or(Some(asked));
                } else if let (None, Some(total)) = (run.visible, run.messages) {
                    let looked = Instant::now();
                    if sandbox_messages(&sandbox, run.session) >= total {
                        run.visible = Some(looked);
                    }
                }
                if last || asked >= run.deadline {
                    if done_tx.send(pending.swap_remove(i)).is_err() {
                        return;
                    }
                } else {
                    i += 1;
                }
            }
            std::thread::sleep(poll);
        }
    });
    (watch_tx, done_rx, thread)
}

/// Messages the end user (our worker) has in the session's conversation.
fn sandbox_messages(sandbox: &Sandbox, session: SessionId) -> i64 {
    sandbox
        .conversation(conversation_id(session))
        .map_or(0, |c| {
            c.messages
                .iter()
                .filter(|m| m.sender_role == "EndUser")
                .count() as i64
        })
}

// ---------------------------------------------------------------------------
// Throughput

struct ThroughputRow {
    backend: Backend,
    workers: usize,
    skipped: bool,
    handoffs: usize,
    delivered: usize,
    seconds: f64,
    sandbox_requests: u64,
    timed_out: bool,
    /// CPU cores busy during the run: this process (workers, sandbox, HTTP
    /// and SQLite), and the whole machine (PostgreSQL, anything else).
    cpu: Option<CpuUse>,
    /// p50 of a `SELECT 1` through the store's pool, sequential, after the run.
    db_round_trip_us: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct CpuUse {
    bench_cores: f64,
    machine_cores: f64,
}

impl ThroughputRow {
    fn skipped(backend: Backend, workers: usize) -> Self {
        ThroughputRow {
            backend,
            workers,
            skipped: true,
            handoffs: 0,
            delivered: 0,
            seconds: 0.0,
            sandbox_requests: 0,
            timed_out: false,
            cpu: None,
            db_round_trip_us: None,
        }
    }

    fn per_second(&self) -> Option<f64> {
        (!self.skipped && self.seconds > 0.0).then(|| self.delivered as f64 / self.seconds)
    }

    fn requests_per_second(&self) -> Option<f64> {
        (!self.skipped && self.seconds > 0.0).then(|| self.sandbox_requests as f64 / self.seconds)
    }

    fn to_json(&self) -> Value {
        json!({
            "backend": self.backend.name(),
            "workers": self.workers,
            "skipped": self.skipped,
            "turns": THROUGHPUT_TURNS,
            "injected_latency_ms": 0,
            "handoffs": self.handoffs,
            "delivered": self.delivered,
            "timed_out": self.timed_out,
            "seconds": self.seconds,
            "handoffs_per_s": self.per_second(),
            "sandbox_requests": self.sandbox_requests,
            "sandbox_requests_per_s": self.requests_per_second(),
            "cpu_cores_bench_process": self.cpu.map(|c| round(c.bench_cores)),
            "cpu_cores_machine": self.cpu.map(|c| round(c.machine_cores)),
            "db_round_trip_us_p50": self.db_round_trip_us.map(round),
        })
    }
}

async fn measure_throughput(backend: Backend, workers: usize) -> Result<ThroughputRow> {
    let Some(mut rig) = Rig::new(backend, false, 0).await? else {
        return Ok(ThroughputRow::skipped(backend, workers));
    };
    let sessions = rig
        .record_sessions(THROUGHPUT_HANDOFFS, THROUGHPUT_TURNS)
        .await?;
    for s in &sessions {
        rig.hand_off(*s).await?;
    }
    let requests_before = rig.sandbox.request_count();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    rig.start_workers(workers);
    let deadline = started + THROUGHPUT_DEADLINE;
    let mut timed_out = false;
    // Jobs first (cheap to count), then the handoff rows: a handoff is
    // marked Delivered just after its job is finished. The poll is coarse
    // on purpose: this is CPU-bound, and polling competes with the workers.
    loop {
        let c = rig.store.outbox_counts(HANDOFF_JOB).await?;
        if c.pending + c.running == 0 {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(THROUGHPUT_POLL).await;
    }
    let filter = HandoffFilter {
        status: Some(HandoffStatus::Delivered),
        limit: 500,
    };
    let mut delivered = rig.store.list_handoffs(&filter).await?.len();
    while delivered < sessions.len() && !timed_out {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        delivered = rig.store.list_handoffs(&filter).await?.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = match (cpu_before, cpu_seconds()) {
        (Some((own0, all0)), Some((own1, all1))) if seconds > 0.0 => Some(CpuUse {
            bench_cores: (own1 - own0) / seconds,
            machine_cores: (all1 - all0) / seconds,
        }),
        _ => None,
    };
    let sandbox_requests = rig.sandbox.request_count() - requests_before;
    rig.stop_workers().await;
    let mut pings = Vec::with_capacity(DB_PINGS);
    for _ in 0..DB_PINGS {
        let t = Instant::now();
        rig.store.ping().await?;
        pings.push(ms(t.elapsed()) * 1000.0);
    }
    rig.shutdown().await;
    Ok(ThroughputRow {
        backend,
        workers,
        skipped: false,
        handoffs: sessions.len(),
        delivered,
        seconds,
        sandbox_requests,
        timed_out,
        cpu,
        db_round_trip_us: Some(Stats::of(&pings).p50),
    })
}

/// CPU time so far, in seconds: (this process, all CPUs busy). Linux only.
fn cpu_seconds() -> Option<(f64, f64)> {
    // USER_HZ: the unit of /proc times, 100 on every mainstream Linux.
    const TICK: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields after it start with `state`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let all = std::fs::read_to_string("/proc/stat").ok()?;
    // cpu  user nice system idle iowait irq softirq steal ...
    let v: Vec<f64> = all
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = v.iter().sum::<f64>() - v.get(3)? - v.get(4)?;
    Some(((utime + stime) / TICK, busy / TICK))
}

// ---------------------------------------------------------------------------
// The rig: a store, a sandbox on loopback, workers

struct Rig {
    store: Store,
    sandbox: Sandbox,
    settings: Arc<SalesforceSettings>,
    config: WorkerConfig,
    notify: Arc<Notify>,
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    server: JoinHandle<()>,
    _dir: Option<tempfile::TempDir>,
}

impl Rig {
    /// A fresh store with one agent, a sandbox whose rep never joins, and
    /// `workers` workers. `None` when the backend is not configured.
    async fn new(backend: Backend, pack_turns: bool, workers: usize) -> Result<Option<Rig>> {
        let (store, dir) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let store = switchboard_store::testing::sqlite_store(dir.path()).await?;
                (store, Some(dir))
            }
            Backend::Postgres => match switchboard_store::testing::postgres_store().await? {
                Some(store) => (store, None),
                None => return Ok(None),
            },
        };
        let sandbox = Sandbox::new(SandboxConfig {
            rep: RepBehaviour {
                accept_after: None,
                ..RepBehaviour::default()
            },
            ..SandboxConfig::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = sandbox.router();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let cfg = sandbox.config();
        let settings = Arc::new(SalesforceSettings::new(
            store.clone(),
            ConfigOverrides::default(),
            SandboxTarget {
                url,
                org_id: cfg.org_id,
                deployment_name: cfg.deployment_name,
            },
            Some("http://127.0.0.1:8080".into()),
        ));
        let spec = AgentInput {
            name: "Support".into(),
            time_zone: Some("America/New_York".into()),
            ..Default::default()
        }
        .validate(Region::default())?;
        store.create_agent(&spec).await?;
        let config = WorkerConfig {
            idle_poll: Duration::from_millis(10),
            lease: Duration::from_secs(60),
            backoff: Backoff {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(50),
            },
            pack_turns,
            ..Default::default()
        };
        let (stop, _) = watch::channel(false);
        let mut rig = Rig {
            store,
            sandbox,
            settings,
            config,
            notify: Arc::new(Notify::new()),
            stop,
            workers: Vec::new(),
            server,
            _dir: dir,
        };
        rig.start_workers(workers);
        Ok(Some(rig))
    }

    fn start_workers(&mut self, n: usize) {
        for _ in 0..n {
            let worker = Worker::new(
                self.store.clone(),
                self.settings.clone(),
                Arc::new(SystemClock),
                self.config.clone(),
                format!("bench-{}", self.workers.len()),
            )
            .with_notifier(self.notify.clone());
            let stop = self.stop.subscribe();
            self.workers
                .push(tokio::spawn(async move { worker.run(stop).await }));
        }
    }

    /// Sessions of `turns` turns each, as a text call records them.
    async fn record_sessions(&self, count: usize, turns: usize) -> Result<Vec<SessionId>> {
        let t0 = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let input = TextCallInput {
                agent: "Support".into(),
                from: "+14155550100".into(),
                to: None,
                direction: None,
                started_at: None,
                turns: (0..turns)
                    .map(|i| TurnInput {
                        speaker: if i % 2 == 0 {
                            Speaker::Ai
                        } else {
                            Speaker::Caller
                        },
                        text: turn_text(i),
                        started_at: t0.plus_millis(3000 * i as i64),
                        ended_at: None,
                    })
                    .collect(),
            };
            ids.push(
                record_text_call(&self.store, input, Region::default(), t0)
                    .await?
                    .id,
            );
        }
        Ok(ids)
    }

    async fn hand_off(&self, session: SessionId) -> Result<HandoffId> {
        let input = HandoffInput {
            reason: "Caller asked for a person: refund for order 1234".into(),
            preferred_channel: Some(PreferredChannel::Callback),
            channel_details: Some("+14155550100".into()),
            end_session: true,
            ..Default::default()
        };
        let now = Timestamp::from_millis(chrono::Utc::now().timestamp_millis());
        Ok(
            request_handoff(&self.store, session, input, now, &self.notify)
                .await?
                .id,
        )
    }

    /// Hands off every session, at most `concurrency` in flight, and waits
    /// for each (up to `timeout` apiece).
    async fn hand_off_and_wait(
        &self,
        sessions: &[SessionId],
        concurrency: usize,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Vec<Run>> {
        let (watch_tx, mut done_rx, thread) =
            spawn_watcher(self.store.clone(), self.sandbox.clone(), poll);
        let mut runs = Vec::with_capacity(sessions.len());
        for chunk in sessions.chunks(concurrency.max(1)) {
            for &session in chunk {
                let asked = Instant::now();
                let id = self.hand_off(session).await?;
                let committed = Instant::now();
                let run = Run {
                    id,
                    session,
                    committed,
                    request_took: committed - asked,
                    deadline: committed + timeout,
                    messages: None,
                    visible: None,
                    done: None,
                    status: None,
                };
                watch_tx.send(run).context("the watcher stopped")?;
            }
            for _ in chunk {
                // The watcher answers for each handoff by its deadline.
                match tokio::time::timeout(timeout + Duration::from_secs(5), done_rx.recv()).await {
                    Ok(Some(run)) => runs.push(run),
                    Ok(None) => return Err("the watcher stopped".into()),
                    Err(_) => return Err("the watcher did not answer in time".into()),
                }
            }
        }
        drop(watch_tx);
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| "the watcher panicked")?;
        Ok(runs)
    }

    /// Stops the workers and waits for them (a bounded wait each).
    async fn stop_workers(&mut self) {
        let _ = self.stop.send(true);
        for w in self.workers.drain(..) {
            // Workers stop between two messages; none should be mid-handoff.
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }

    async fn shutdown(mut self) {
        self.stop_workers().await;
        self.server.abort();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.store.close()).await;
    }
}

/// Plausible turns of 60–110 characters, so packing has something to pack.
fn turn_text(i: usize) -> String {
    const LINES: [&str; 6] = [
        "Thanks for calling Acme support, this is the virtual assistant. How can I help?",
        "Hi, I ordered a blender two weeks ago and it still hasn't arrived.",
        "I'm sorry to hear that. Could you tell me the order number so I can look it up?",
        "Sure, it's 1234-5678. I also got charged twice for it, which is the bigger problem.",
        "I see order 1234-5678 and two charges of $89.99. Let me check what happened there.",
        "Honestly I'd rather talk to a person about the refund, can you put me through?",
    ];
    format!("{} ({})", LINES[i % LINES.len()], i + 1)
}

// ---------------------------------------------------------------------------
// Statistics, targets, output

#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    n: usize,
    min: f64,
    p50: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Stats {
    fn of(samples: &[f64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let k = (p / 100.0 * s.len() as f64).ceil() as usize;
            s[k.clamp(1, s.len()) - 1]
        };
        Stats {
            n: s.len(),
            min: s[0],
            p50: rank(50.0),
            p99: rank(99.0),
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        }
    }

    fn to_json(self) -> Value {
        if self.n == 0 {
            return Value::Null;
        }
        json!({
            "n": self.n,
            "min": round(self.min),
            "p50": round(self.p50),
            "p99": round(self.p99),
            "max": round(self.max),
            "mean": round(self.mean),
        })
    }
}

struct TargetResult {
    name: String,
    threshold: String,
    /// (what was measured, value, pass)
    checks: Vec<(String, Option<f64>, Option<bool>)>,
    conclusion: String,
}

impl TargetResult {
    fn to_json(&self) -> Value {
        json!({
            "target": self.name,
            "threshold": self.threshold,
            "conclusion": self.conclusion,
            "checks": self.checks.iter().map(|(what, value, pass)| json!({
                "case": what,
                "value": value.map(round),
                "pass": pass,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The target a latency row is judged against, if any: (label, pass).
fn latency_target(row: &LatencyRow) -> Option<(String, bool)> {
    let c = &row.case;
    if row.delivered_ms.is_empty() {
        return None;
    }
    let p99 = Stats::of(&row.delivered_ms).p99;
    let ok = row.errors.is_empty();
    if c.latency_ms == 0 && c.turns == 40 {
        Some((
            format!("p99 < {TARGET_40_TURNS_P99_MS:.0} ms"),
            ok && p99 < TARGET_40_TURNS_P99_MS,
        ))
    } else if c.latency_ms == SLOW_MS {
        Some((
            format!("p99 < {:.0} s", TARGET_VISIBLE_P99_MS / 1000.0),
            ok && p99 < TARGET_VISIBLE_P99_MS,
        ))
    } else {
        None
    }
}

fn targets(latency: &[LatencyRow], throughput: &[ThroughputRow]) -> Vec<TargetResult> {
    let check = |r: &LatencyRow| {
        let p99 = (!r.delivered_ms.is_empty()).then(|| Stats::of(&r.delivered_ms).p99);
        let pass = latency_target(r).map(|(_, pass)| pass);
        (r.case.label(), p99, pass)
    };
    let t1: Vec<_> = latency
        .iter()
        .filter(|r| r.case.latency_ms == 0 && r.case.turns == 40)
        .map(check)
        .collect();
    let t1_conclusion = summarise(&t1);

    let slow: Vec<&LatencyRow> = latency
        .iter()
        .filter(|r| r.case.latency_ms == SLOW_MS)
        .collect();
    let reached = |pack: bool| {
        let turns: Vec<String> = slow
            .iter()
            .filter(|r| r.case.pack == pack && latency_target(r).is_some_and(|(_, p)| p))
            .map(|r| r.case.turns.to_string())
            .collect();
        if turns.is_empty() {
            "no transcript size".to_string()
        } else {
            format!("{} turns", turns.join("/"))
        }
    };
    let missed: Vec<String> = slow
        .iter()
        .filter(|r| !latency_target(r).is_some_and(|(_, p)| p))
        .map(|r| {
            format!(
                "{} {} turns (≥ {:.1} s: {:.0} sequential requests × {SLOW_MS} ms)",
                r.case.mode(),
                r.case.turns,
                r.requests_per_handoff * SLOW_MS as f64 / 1000.0,
                r.requests_per_handoff,
            )
        })
        .collect();
    let t2_conclusion = if slow.is_empty() {
        "skipped".to_string()
    } else {
        format!(
            "per-turn reaches it for {}; packed for {}{}",
            reached(false),
            reached(true),
            if missed.is_empty() {
                String::new()
            } else {
                format!("; missed: {}", missed.join(", "))
            }
        )
    };
    let t2: Vec<_> = slow.iter().map(|r| check(r)).collect();

    let t3: Vec<_> = throughput
        .iter()
        .filter(|t| t.backend == Backend::Postgres && t.workers == 4)
        .map(|t| {
            let v = t.per_second();
            (
                format!("{} × {} workers", t.backend.name(), t.workers),
                v,
                v.map(|v| !t.timed_out && v >= TARGET_PG_HANDOFFS_PER_S),
            )
        })
        .collect();
    let t3_conclusion = summarise(&t3);
    vec![
        TargetResult {
            name: "40-turn handoff, commit → last ack, at 0 ms".into(),
            threshold: format!("p99 < {TARGET_40_TURNS_P99_MS} ms"),
            checks: t1,
            conclusion: t1_conclusion,
        },
        TargetResult {
            name: "full transcript visible at 100 ms per request".into(),
            threshold: format!(
                "p99 < {TARGET_VISIBLE_P99_MS} ms, judged on delivered_ms (≥ visible_ms)"
            ),
            checks: t2,
            conclusion: t2_conclusion,
        },
        TargetResult {
            name: "throughput on PostgreSQL, 4 workers, 10-turn handoffs at 0 ms".into(),
            threshold: format!("≥ {TARGET_PG_HANDOFFS_PER_S} handoffs/s"),
            checks: t3,
            conclusion: t3_conclusion,
        },
    ]
}

fn summarise(checks: &[(String, Option<f64>, Option<bool>)]) -> String {
    if checks.iter().all(|(_, _, pass)| pass.is_none()) {
        return "skipped".into();
    }
    let pass = checks.iter().filter(|(_, _, p)| *p == Some(true)).count();
    format!("{pass} of {} cases PASS", checks.len())
}

fn print_tables(latency: &[LatencyRow], throughput: &[ThroughputRow], targets: &[TargetResult]) {
    println!();
    println!("Latency: request_handoff returned → handoff Delivered (last ack recorded), ms");
    println!(
        "  vis = first poll finding every message in the sandbox; poll = store poll interval, ms;"
    );
    println!("  req/h = sandbox requests per handoff; p99 is nearest-rank (the max when n < 100)");
    println!(
        "{:<9}{:>6}  {:<9}{:>6}{:>6}{:>7}{:>5}{:>5}{:>9}{:>9}{:>9}{:>9}{:>5}  {:<15}result",
        "backend",
        "lat",
        "mode",
        "turns",
        "msgs",
        "req/h",
        "n",
        "err",
        "p50",
        "p99",
        "max",
        "vis p99",
        "poll",
        "target",
    );
    for r in latency {
        let c = &r.case;
        let d = Stats::of(&r.delivered_ms);
        let v = Stats::of(&r.visible_ms);
        let (target, result) = match latency_target(r) {
            Some((t, pass)) => (t, if pass { "PASS" } else { "MISS" }),
            None => (String::new(), ""),
        };
        println!(
            "{:<9}{:>6}  {:<9}{:>6}{:>6}{:>7.1}{:>5}{:>5}{:>9.1}{:>9.1}{:>9.1}{:>9.1}{:>5}  {:<15}{}",
            c.backend.name(),
            format!("{} ms", c.latency_ms),
            c.mode(),
            c.turns,
            r.messages.map_or("-".into(), |m| m.to_string()),
            r.requests_per_handoff,
            d.n,
            r.errors.len(),
            d.p50,
            d.p99,
            d.max,
            v.p99,
            if c.poll < Duration::from_millis(1) {
                format!(".{}", c.poll.as_micros() / 100)
            } else {
                c.poll.as_millis().to_string()
            },
            target,
            result
        );
    }
    println!();
    println!(
        "Throughput: {THROUGHPUT_HANDOFFS} × {THROUGHPUT_TURNS}-turn handoffs committed, then workers started; until all Delivered (0 ms latency)"
    );
    println!(
        "  cpu = cores busy during the run: this process / the whole machine; rtt = SELECT 1 through the pool"
    );
    println!(
        "{:<9}{:>8}{:>10}{:>10}{:>9}{:>12}{:>15}{:>12}{:>9}  {:<15}result",
        "backend",
        "workers",
        "handoffs",
        "delivered",
        "seconds",
        "handoffs/s",
        "sandbox req/s",
        "cpu",
        "rtt µs",
        "target",
    );
    for t in throughput {
        let target = if t.backend == Backend::Postgres && t.workers == 4 {
            format!("≥ {TARGET_PG_HANDOFFS_PER_S:.0}/s")
        } else {
            String::new()
        };
        if t.skipped {
            println!(
                "{:<9}{:>8}  skipped ({} not set)  {}",
                t.backend.name(),
                t.workers,
                switchboard_store::testing::POSTGRES_URL_VAR,
                target,
            );
            continue;
        }
        let result = match t.per_second() {
            Some(v) if !target.is_empty() => {
                if !t.timed_out && v >= TARGET_PG_HANDOFFS_PER_S {
                    "PASS"
                } else {
                    "MISS"
                }
            }
            _ => "",
        };
        println!(
            "{:<9}{:>8}{:>10}{:>10}{:>9.2}{:>12.1}{:>15.0}{:>12}{:>9.0}  {:<15}{}{}",
            t.backend.name(),
            t.workers,
            t.handoffs,
            t.delivered,
            t.seconds,
            t.per_second().unwrap_or(0.0),
            t.requests_per_second().unwrap_or(0.0),
            t.cpu.map_or("-".into(), |c| format!(
                "{:.2}/{:.2}",
                c.bench_cores, c.machine_cores
            )),
            t.db_round_trip_us.unwrap_or(0.0),
            target,
            result,
            if t.timed_out { " (timed out)" } else { "" }
        );
    }
    println!();
    println!("Targets");
    for t in targets {
        println!("  {} — {}: {}", t.name, t.threshold, t.conclusion);
    }
}

fn output_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_OUT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("bench").join("handoff-delivery.json")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn machine_info() -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    json!({
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "git_rev": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "loadavg_at_start": loadavg(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// The 1/5/15-minute load (other builds on a shared machine skew the numbers).
fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
