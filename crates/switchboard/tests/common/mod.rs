//! Helpers for running the real `switchboard` binary against a temp directory.

#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_store::{SecretBox, Store, StoreOptions};

/// How long any single wait in these tests may take before failing.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A temp working directory with its own data directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// `switchboard ARGS --data-dir <sandbox>/data`, run in the sandbox with
    /// no inherited `SWITCHBOARD_*` or `RUST_LOG` variables.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare_cmd(args);
        cmd.arg("--data-dir").arg(self.data_dir());
        cmd
    }

    /// Like [`Sandbox::cmd`] without `--data-dir`.
    pub fn bare_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") || name == "RUST_LOG" {
                cmd.env_remove(name);
            }
        }
        // Tests run in parallel: the built-in Salesforce sandbox and SIP take
        // free ports.
        cmd.env("SWITCHBOARD_SANDBOX_ADDR", "127.0.0.1:0");
        cmd.env("SWITCHBOARD_SIP_ADDR", "127.0.0.1:0");
        // Only the phone tests need real speech (they set `auto`): the others
        // should not load models.
        cmd.env("SWITCHBOARD_SPEECH_STT", "none");
        cmd.env("SWITCHBOARD_SPEECH_TTS", "espeak-ng");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// Runs and asserts exit code 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "switchboard {args:?} failed:\n{run}");
        run
    }

    /// The sandbox's store, opened the way the binary opens it.
    pub async fn store(&self) -> Store {
        let key = SecretBox::load_or_create(&self.data_dir().join("secret.key")).unwrap();
        let url = format!(
            "sqlite://{}",
            self.data_dir().join("switchboard.db").display()
        );
        Store::connect(&url, StoreOptions::default(), key)
            .await
            .unwrap()
    }
}

/// A finished run's exit code and output.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

/// A running `switchboard serve`, killed on drop if still running.
pub struct Server {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Stdout lines read so far.
    pub stdout: Vec<String>,
    /// Everything written to stderr so far (drained so the pipe never fills).
    stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Server {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    /// Reads stdout until a line starting with `prefix`; panics with what was
    /// seen (and stderr) if it does not come within [`DEADLINE`].
    pub fn wait_for_line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no stdout line starting with {prefix:?}; stdout so far: {:?}\nstderr:\n{}",
                        self.stdout,
                        self.stderr()
                    );
                }
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The address in the `Dashboard: http://ADDR/ …` line.
    pub fn wait_for_dashboard(&mut self) -> SocketAddr {
        let line = self.wait_for_line("Dashboard: ");
        let url = line
            .trim_start_matches("Dashboard: http://")
            .split('/')
            .next()
            .unwrap();
        url.parse()
            .unwrap_or_else(|e| panic!("{line:?}: bad address ({e})"))
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "server did not stop within {DEADLINE:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET; returns the status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// A minimal HTTP/1.1 POST of a JSON body with a bearer token; returns the
/// status code and body.
pub fn http_post_json(addr: SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Sends `request` as is; an outbound call may take a while to be answered.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
