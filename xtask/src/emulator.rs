//! The local AWS emulator: a moto server (<https://docs.getmoto.org>) on `127.0.0.1`.
//!
//! The local environment points the AWS SDK at a moto server. This module owns its lifecycle:
//!
//! - [`status`] asks whether something healthy answers at the endpoint (`GET /moto-api/` → 200).
//! - [`ensure_running`] starts one if nothing answers, and leaves it running so the next command
//!   finds the state the previous one created (moto keeps everything in memory). It is started in
//!   its own session, so it outlives the CLI and a Ctrl-C in the terminal does not reach it.
//! - [`stop`] terminates the server *we* started (recorded in `state_dir/moto.pid`), and never any
//!   other process.
//! - [`reset`] wipes all emulator state (`POST /moto-api/reset`).
//! - [`TestEmulator`] gives each integration test its own throw-away server on a free port, so
//!   tests run in parallel without sharing state.
//!
//! moto is a Python package. We use `python3` from `PATH` if it can import `moto[server]` 5.2+
//! and waitress (CI installs them there), else the project virtualenv (`venv_dir`), creating it
//! and installing both into it on first use. moto runs on waitress rather than its own
//! werkzeug development server (`moto_serve.py`): the same application, answered faster.
//!
//! Everything here speaks plain HTTP/1.1 over a `TcpStream` rather than pulling in an HTTP client:
//! we only ever need a status code from a local server.
//!
//! Unix only (`setsid`, signals, `/proc`), like the rest of the local tooling.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What `pip` installs into the project virtualenv. The design notes record that the stack works
/// against moto 5.2; older 5.x releases miss some of the API surface we use.
const MOTO_REQUIREMENT: &str = "moto[server]>=5.2,<6";
/// The HTTP server moto runs on (see `moto_serve.py`); installed beside it.
const SERVER_REQUIREMENT: &str = "waitress>=3,<4";
/// Health endpoint: moto's dashboard. Answers 200 as soon as the server accepts requests.
const HEALTH_PATH: &str = "/moto-api/";
/// A cold start takes about a second; 30 s leaves room for a loaded 2-core CI machine.
const START_DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// moto exits promptly on SIGTERM; past this we escalate to SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// Bounds every request to the emulator, so a port held by something that never answers cannot
/// hang `status`.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// A reset rebuilds every backend (with IAM's ~1,000 managed policies), which takes about a
/// second on an idle machine and several on a loaded 2-core CI runner.
const RESET_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of `moto.log` an error quotes.
const LOG_TAIL_LINES: usize = 20;

/// Python that checks, without importing moto (which takes ~0.7 s), that `moto[server]` and
/// waitress are installed. Prints the moto version, then the comma-separated missing modules.
const PROBE_SCRIPT: &str = "\
import importlib.metadata as m, importlib.util as u
print(m.version('moto'))
print(','.join(x for x in ('moto', 'flask', 'flask_cors', 'werkzeug', 'waitress') if u.find_spec(x) is None))
";

/// Where and how the local emulator runs. Built by the caller from the local environment config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// Address to bind and to talk to, normally `127.0.0.1`.
    pub host: String,
    pub port: u16,
    /// Holds `moto.pid`, `moto.version`, `moto.log` and `moto.lock`, e.g. `<repo>/.xtask/emulator`.
    pub state_dir: PathBuf,
    /// The project virtualenv moto is installed into when `python3` lacks it, e.g.
    /// `<repo>/.xtask/venv`.
    pub venv_dir: PathBuf,
}

impl EmulatorConfig {
    /// `http://host:port`, the endpoint URL to give the AWS SDK.
    pub fn endpoint(&self) -> String {
        endpoint_url(&self.host, self.port)
    }

    /// The pid of the server we started; present only while it runs.
    /// The digest of the emulator fixes the running server was started with.
    pub fn fixes_file(&self) -> PathBuf {
        self.state_dir.join("moto.fixes")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.state_dir.join("moto.pid")
    }

    /// The server's stdout and stderr (request log and tracebacks).
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("moto.log")
    }

    fn version_file(&self) -> PathBuf {
        self.state_dir.join("moto.version")
    }

    fn lock_file(&self) -> PathBuf {
        self.state_dir.join("moto.lock")
    }
}

/// What [`status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub endpoint: String,
    /// Something answers `GET /moto-api/` with 200 at the endpoint.
    pub healthy: bool,
    /// The pid from the pid file, if that process is still a moto server (i.e. we started it).
    pub pid: Option<u32>,
    /// The moto version, known when we started the server (recorded next to the pid file).
    pub version: Option<String>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.healthy {
            "running"
        } else {
            "not answering"
        };
        write!(f, "emulator at {}: {state}", self.endpoint)?;
        match (self.pid, &self.version) {
            (Some(pid), Some(v)) => write!(f, " (moto {v}, pid {pid}, started by xtask)"),
            (Some(pid), None) => write!(f, " (pid {pid}, started by xtask)"),
            (None, _) if self.healthy => write!(f, " (not started by xtask)"),
            (None, _) => Ok(()),
        }
    }
}

/// Outcome of [`ensure_running`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Something healthy already answered at the endpoint; nothing was started.
    AlreadyRunning,
    /// We started a server with this pid; it keeps running after this process exits.
    Started { pid: u32 },
}

/// Outcome of [`stop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The server we had started (this pid) has exited.
    Stopped { pid: u32 },
    /// No server started by us was running (a stale pid file is removed).
    NotRunning,
}

#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error(
        "python3 was not found on PATH: install Python 3 (3.9 or newer) so the local emulator \
         (moto) can run"
    )]
    PythonNotFound,
    #[error(
        "creating the virtualenv {dir} failed: {detail}; install Python's venv module (e.g. \
         `apt install python3-venv`) or install moto yourself with `pip install '{req}' '{server}'`",
        req = MOTO_REQUIREMENT,
        server = SERVER_REQUIREMENT
    )]
    VenvFailed { dir: PathBuf, detail: String },
    #[error(
        "installing '{req}' and '{server}' into {dir} failed: {detail}; check network access \
         to PyPI and retry, or install them yourself with `pip install '{req}' '{server}'`",
        req = MOTO_REQUIREMENT,
        server = SERVER_REQUIREMENT
    )]
    InstallFailed { dir: PathBuf, detail: String },
    #[error("{action} {path}: {source}; check the path's permissions")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not start the moto server with {python}: {source}")]
    Spawn {
        python: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the moto server exited during start-up ({status}); if port {port} is in use by another \
         program, stop it or choose another port. Last lines of {log}:\n{tail}",
        log = log.display()
    )]
    ExitedEarly {
        status: ExitStatus,
        port: u16,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "the moto server did not become healthy at {endpoint} within {secs} s and was stopped; \
         retry, or look for the cause in {log}:\n{tail}",
        log = log.display()
    )]
    StartTimeout {
        endpoint: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "a moto server started by xtask (pid {pid}) is running but does not answer at \
         {endpoint}; run `cargo xtask emulator stop` and try again"
    )]
    Unresponsive { pid: u32, endpoint: String },
    #[error(
        "the moto server (pid {pid}) did not exit within {secs} s of SIGTERM and SIGKILL; kill \
         it by hand, then remove {pid_file}",
        pid_file = pid_file.display()
    )]
    StopTimeout {
        pid: u32,
        secs: u64,
        pid_file: PathBuf,
    },
    #[error("sending a signal to pid {pid} failed: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("invalid emulator endpoint {0:?}: expected http://HOST:PORT")]
    BadEndpoint(String),
    #[error(
        "request to {url} failed: {detail}; is the emulator running? start it with \
         `cargo xtask emulator start`"
    )]
    Http { url: String, detail: String },
    #[error("{url} answered HTTP {status}, expected 200; check that a moto server listens there")]
    UnexpectedStatus { url: String, status: u16 },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmulatorError {
    let path = path.to_path_buf();
    move |source| EmulatorError::Io {
        action,
        path,
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Public operations
// ---------------------------------------------------------------------------------------------

/// Whether something healthy answers at the endpoint, and what we know about the server we
/// started. Never fails: an unreadable pid file just means "not started by us".
pub async fn status(cfg: &EmulatorConfig) -> Status {
    let healthy = healthy_at(&cfg.host, cfg.port).await;
    let pid = read_pid_file(&cfg.pid_file()).filter(|&pid| is_moto_process(pid));
    let version = pid
        .and_then(|_| fs::read_to_string(cfg.version_file()).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    Status {
        endpoint: cfg.endpoint(),
        healthy,
        pid,
        version,
    }
}

/// Whether `GET {endpoint}/moto-api/` answers 200 (within a couple of seconds).
pub async fn is_healthy(endpoint: &str) -> bool {
    match parse_endpoint(endpoint) {
        Ok((host, port)) => healthy_at(&host, port).await,
        Err(_) => false,
    }
}

/// Makes sure a healthy emulator answers at the endpoint, starting one if needed.
///
/// The server is started detached (own session, stdin closed, output to `moto.log`) so it keeps
/// running for the next command. Concurrent callers with the same `state_dir` are serialised by a
/// lock file, so two commands started at once do not both spawn a server.
pub async fn ensure_running(cfg: &EmulatorConfig) -> Result<Started, EmulatorError> {
    if healthy_at(&cfg.host, cfg.port).await {
        warn_if_stale(cfg);
        return Ok(Started::AlreadyRunning);
    }
    fs::create_dir_all(&cfg.state_dir).map_err(io_err("creating", &cfg.state_dir))?;
    let _lock = lock_file(cfg.lock_file()).await?;
    // Whoever held the lock before us may have just started it.
    if healthy_at(&cfg.host, cfg.port).await {
        return Ok(Started::AlreadyRunning);
    }
    if let Some(pid) = read_pid_file(&cfg.pid_file()) {
        if is_moto_process(pid) {
            // Ours, alive, yet silent: hung, or bound to another port after a config change.
            // Starting a second one would lose track of it.
            return Err(EmulatorError::Unresponsive {
                pid,
                endpoint: cfg.endpoint(),
            });
        }
        remove_if_exists(&cfg.pid_file())?;
    }

    let python = ensure_python(&cfg.venv_dir).await?;
    let log_path = cfg.log_file();
    let log = File::create(&log_path).map_err(io_err("creating", &log_path))?;
    let log_err = log.try_clone().map_err(io_err("opening", &log_path))?;

    let mut cmd = Command::new(&python.exe);
    cmd.args([
        "-c",
        &server_script(""),
        "-H",
        &cfg.host,
        "-p",
        &cfg.port.to_string(),
    ])
    .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log_err);
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2), which is
    // async-signal-safe. A new session detaches the server from our terminal and process group,
    // so it survives the CLI exiting, the terminal closing, and Ctrl-C in later commands.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| EmulatorError::Spawn {
        python: python.exe.clone(),
        source,
    })?;
    let pid = child.id();
    // Written before the health wait, so a CLI interrupted while waiting still leaves a pid file
    // that `stop` can act on.
    write_file(&cfg.pid_file(), &format!("{pid}\n"))?;
    write_file(&cfg.version_file(), &format!("{}\n", python.version))?;
    write_file(&cfg.fixes_file(), &format!("{}\n", fixes_digest()))?;

    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if healthy_at(&cfg.host, cfg.port).await {
            // `child` is dropped without being waited on: that neither kills nor detaches it,
            // and `stop` reaps it if it exits while this process still runs.
            return Ok(Started::Started { pid });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = remove_if_exists(&cfg.pid_file());
            return Err(EmulatorError::ExitedEarly {
                status,
                port: cfg.port,
                tail: log_tail(&log_path),
                log: log_path,
            });
        }
        if Instant::now() >= deadline {
            // A server that is not healthy after this long is stuck; leaving it would block the
            // port and make the next attempt fail as `Unresponsive`.
            let _ = child.kill();
            let _ = child.wait();
            let _ = remove_if_exists(&cfg.pid_file());
            return Err(EmulatorError::StartTimeout {
                endpoint: cfg.endpoint(),
                secs: START_DEADLINE.as_secs(),
                tail: log_tail(&log_path),
                log: log_path,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Stops the server we started (SIGTERM, then SIGKILL if it does not exit in time) and removes
/// the pid file.
///
/// Only a pid recorded in our pid file whose command line still mentions moto is signalled, so a
/// stale pid file whose pid was reused by another process never gets that process killed.
pub async fn stop(cfg: &EmulatorConfig) -> Result<Stopped, EmulatorError> {
    let pid_file = cfg.pid_file();
    let Some(pid) = read_pid_file(&pid_file) else {
        remove_if_exists(&pid_file)?; // unparsable: useless to anyone
        return Ok(Stopped::NotRunning);
    };
    if !is_moto_process(pid) {
        remove_if_exists(&pid_file)?;
        return Ok(Stopped::NotRunning);
    }

    signal(pid, libc::SIGTERM)?;
    if !wait_gone(pid, STOP_DEADLINE).await {
        signal(pid, libc::SIGKILL)?;
        if !wait_gone(pid, STOP_DEADLINE).await {
            return Err(EmulatorError::StopTimeout {
                pid,
                secs: 2 * STOP_DEADLINE.as_secs(),
                pid_file,
            });
        }
    }
    remove_if_exists(&pid_file)?;
    remove_if_exists(&cfg.version_file())?;
    Ok(Stopped::Stopped { pid })
}

/// Wipes all state in the emulator at `endpoint` (`http://host:port`): `POST /moto-api/reset`.
pub async fn reset(endpoint: &str) -> Result<(), EmulatorError> {
    let (host, port) = parse_endpoint(endpoint)?;
    let url = format!("{}/moto-api/reset", endpoint_url(&host, port));
    match http_status(&host, port, "POST", "/moto-api/reset", RESET_TIMEOUT).await {
        Ok(200) => Ok(()),
        Ok(status) => Err(EmulatorError::UnexpectedStatus { url, status }),
        Err(detail) => Err(EmulatorError::Http { url, detail }),
    }
}

// ---------------------------------------------------------------------------------------------
// Test harness
// ---------------------------------------------------------------------------------------------

/// Runs `moto.server`'s `main`, and exits as soon as stdin reaches end-of-file. The test process
/// holds the other end of that pipe, so the server dies with the test process however it ends
/// (even SIGKILL or abort, where `Drop` never runs) instead of leaking.
const TEST_SERVER_PRELUDE: &str = "\
import os, sys, threading
def _exit_with_parent():
    sys.stdin.buffer.read()
    os._exit(0)
threading.Thread(target=_exit_with_parent, daemon=True).start()
";

/// Patches for moto's known differences from AWS (see the file), applied before it serves.
const MOTO_FIXES: &str = include_str!("moto_fixes.py");
/// Serves moto on waitress (see the file).
const MOTO_SERVE: &str = include_str!("moto_serve.py");

/// SHA-256 of [`MOTO_FIXES`] and [`MOTO_SERVE`]: a server started by an older xtask runs older
/// fixes.
fn fixes_digest() -> String {
    use sha2::Digest as _;
    let mut digest = sha2::Sha256::new();
    digest.update(MOTO_FIXES.as_bytes());
    digest.update(MOTO_SERVE.as_bytes());
    hex::encode(digest.finalize())
}

/// The fixes are applied when the server starts, so a server we started before an update keeps
/// the old ones (and, e.g., fails writes to tables with stream triggers). Its state lives only
/// in memory, so it is not restarted behind the user's back: they are told.
fn warn_if_stale(cfg: &EmulatorConfig) {
    let Some(pid) = read_pid_file(&cfg.pid_file()) else {
        return; // not ours: someone else's moto, nothing known about its fixes
    };
    if !is_moto_process(pid) {
        return;
    }
    let recorded = fs::read_to_string(cfg.fixes_file()).unwrap_or_default();
    if recorded.trim() != fixes_digest() {
        tracing::warn!(
            "the emulator at {} (pid {pid}) was started by an older xtask and runs older emulator \
             fixes; run `cargo xtask emulator stop` and try again (its in-memory state is lost)",
            cfg.endpoint()
        );
    }
}

/// The Python program that runs a moto server with [`MOTO_FIXES`] after `prelude`; the
/// command line still names moto, which [`stop`] checks before signalling.
fn server_script(prelude: &str) -> String {
    format!("{prelude}\n{MOTO_FIXES}\n{MOTO_SERVE}")
}

/// How often [`TestEmulator::try_start`] tries a new port when the server cannot get the one it
/// picked (another process took it between our probe and the server's bind).
const TEST_START_ATTEMPTS: usize = 5;

/// A private moto server for one test: its own port and its own state, killed on drop.
///
/// Parallel-safe: each instance picks a free port (asking the kernel for one) and verifies that
/// the process listening there is the one it started, retrying with another port otherwise.
///
/// ```no_run
/// # async fn t() {
/// let emu = xtask::emulator::TestEmulator::start().await;
/// let endpoint = emu.endpoint(); // http://127.0.0.1:PORT
/// # }
/// ```
#[derive(Debug)]
pub struct TestEmulator {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TestEmulator {
    /// Starts a server and waits until it is healthy. Panics (failing the test) if it cannot.
    pub async fn start() -> TestEmulator {
        match Self::try_start().await {
            Ok(emu) => emu,
            Err(e) => panic!("starting a test emulator: {e}"),
        }
    }

    /// A server acting as another account (`MOTO_ACCOUNT_ID`): what an environment pinned to
    /// an account with `allowed_account_ids` needs to be rehearsed as written.
    pub async fn start_as_account(account_id: &str) -> TestEmulator {
        match Self::try_start_with(&[("MOTO_ACCOUNT_ID", account_id)]).await {
            Ok(emu) => emu,
            Err(e) => panic!("starting a test emulator: {e}"),
        }
    }

    /// Like [`TestEmulator::start`], returning the error instead of panicking.
    pub async fn try_start() -> Result<TestEmulator, EmulatorError> {
        Self::try_start_with(&[]).await
    }

    async fn try_start_with(env: &[(&str, &str)]) -> Result<TestEmulator, EmulatorError> {
        let python = test_python().await?;
        let mut last_err = None;
        for _ in 0..TEST_START_ATTEMPTS {
            let port = free_port()?;
            match Self::spawn_on(&python.exe, port, env).await {
                Ok(emu) => return Ok(emu),
                // Lost the port to someone else: try another one.
                Err(e @ EmulatorError::ExitedEarly { .. }) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    async fn spawn_on(
        python: &Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> Result<TestEmulator, EmulatorError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "xtask-test-moto-{}-{}-{port}.log",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let out = File::create(&log).map_err(io_err("creating", &log))?;
        let err = out.try_clone().map_err(io_err("opening", &log))?;
        let child = Command::new(python)
            .args([
                "-c",
                &server_script(TEST_SERVER_PRELUDE),
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| EmulatorError::Spawn {
                python: python.to_path_buf(),
                source,
            })?;
        // From here on, Drop kills and reaps the child and removes the log on every exit path.
        let mut emu = TestEmulator { child, port, log };
        let pid = emu.child.id();

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(Some(status)) = emu.child.try_wait() {
                return Err(EmulatorError::ExitedEarly {
                    status,
                    port,
                    log: emu.log.clone(),
                    tail: log_tail(&emu.log),
                });
            }
            // Health alone is not enough: if another test's server got this port first, it would
            // answer while ours is still importing moto (and about to fail to bind).
            if owns_listener(pid, port) && healthy_at("127.0.0.1", port).await {
                return Ok(emu);
            }
            if Instant::now() >= deadline {
                return Err(EmulatorError::StartTimeout {
                    endpoint: emu.endpoint(),
                    secs: START_DEADLINE.as_secs(),
                    log: emu.log.clone(),
                    tail: log_tail(&emu.log),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL to give the AWS SDK.
    pub fn endpoint(&self) -> String {
        endpoint_url("127.0.0.1", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid (for tests that check it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for TestEmulator {
    fn drop(&mut self) {
        // SIGKILL and reap synchronously: there is no async drop, and both are immediate. Reaping
        // means the port is free and the pid gone once drop returns.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
    }
}

/// A port the kernel considers free right now. The listener is dropped before the server binds,
/// so another process may take the port meanwhile; callers detect that and retry.
fn free_port() -> Result<u16, EmulatorError> {
    let addr = "127.0.0.1:0";
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(io_err("binding", Path::new(addr)))
}

/// Python for test servers, found once per test process (many tests start servers at once).
async fn test_python() -> Result<Python, EmulatorError> {
    static PYTHON: tokio::sync::OnceCell<Python> = tokio::sync::OnceCell::const_new();
    // Tests have no config: use the default project venv (`<repo>/.xtask/venv`), which is only
    // created if `python3` lacks moto.
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.xtask/venv");
    PYTHON
        .get_or_try_init(|| ensure_python(&venv))
        .await
        .cloned()
}

// ---------------------------------------------------------------------------------------------
// Python discovery and installation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Python {
    exe: PathBuf,
    /// The installed moto version.
    version: String,
}

/// A Python that has `moto[server]` 5.2+: `python3` on PATH first, then the project venv; if
/// neither, installs it into the venv.
/// A Python that can run moto, installing it into the project venv if needed; returns the
/// interpreter's path. `cargo xtask test` calls this so a fresh machine needs no other setup.
pub async fn ensure_moto(venv_dir: &Path) -> Result<PathBuf, EmulatorError> {
    ensure_python(venv_dir).await.map(|p| p.exe)
}

async fn ensure_python(venv_dir: &Path) -> Result<Python, EmulatorError> {
    if let Some(py) = probe(Path::new("python3")).await {
        return Ok(py);
    }
    if let Some(py) = probe(&venv_python(venv_dir)).await {
        return Ok(py);
    }
    install_venv(venv_dir).await
}

fn venv_python(venv_dir: &Path) -> PathBuf {
    venv_dir.join("bin").join("python")
}

/// `Some` if `exe` runs and has a usable `moto[server]`.
async fn probe(exe: &Path) -> Option<Python> {
    let out = tokio::process::Command::new(exe)
        .args(["-c", PROBE_SCRIPT])
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None; // not installed (PackageNotFoundError) or not a Python at all
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    let version = lines.next()?.trim().to_string();
    let missing = lines.next().unwrap_or("").trim();
    (missing.is_empty() && version_ok(&version)).then(|| Python {
        exe: exe.to_path_buf(),
        version,
    })
}

/// Matches [`MOTO_REQUIREMENT`]: 5.x with x >= 2.
fn version_ok(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    });
    matches!((parts.next(), parts.next()), (Some(Some(5)), Some(Some(minor))) if minor >= 2)
}

/// Creates `venv_dir` and installs moto into it, under a lock so concurrent callers (parallel
/// tests, two terminals) install once.
async fn install_venv(venv_dir: &Path) -> Result<Python, EmulatorError> {
    let parent = venv_dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    let _lock = lock_file(venv_dir.with_extension("lock")).await?;
    if let Some(py) = probe(&venv_python(venv_dir)).await {
        return Ok(py); // installed by whoever held the lock before us
    }

    let started = Instant::now();
    eprintln!(
        "xtask: moto (the local AWS emulator) is not installed for python3; installing \
         '{MOTO_REQUIREMENT}' and '{SERVER_REQUIREMENT}' into {} — this takes a minute or \
         two, once",
        venv_dir.display()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(venv_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => EmulatorError::PythonNotFound,
            _ => EmulatorError::VenvFailed {
                dir: venv_dir.to_path_buf(),
                detail: e.to_string(),
            },
        })?;
    if !out.status.success() {
        return Err(EmulatorError::VenvFailed {
            dir: venv_dir.to_path_buf(),
            detail: last_lines(&String::from_utf8_lossy(&out.stderr), 5),
        });
    }

    eprintln!("xtask: running pip install '{MOTO_REQUIREMENT}' '{SERVER_REQUIREMENT}' ...");
    let python = venv_python(venv_dir);
    // pip's progress goes to our stderr (its stdout too), keeping our stdout for command output.
    let stderr = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(io_err("duplicating", Path::new("stderr")))?;
    let status = tokio::process::Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args([MOTO_REQUIREMENT, SERVER_REQUIREMENT])
        .stdin(Stdio::null())
        .stdout(stderr)
        .status()
        .await
        .map_err(|e| EmulatorError::InstallFailed {
            dir: venv_dir.to_path_buf(),
            detail: e.to_string(),
        })?;
    if !status.success() {
        return Err(EmulatorError::InstallFailed {
            dir: venv_dir.to_path_buf(),
            detail: format!("pip exited with {status} (its output is above)"),
        });
    }
    let py = probe(&python)
        .await
        .ok_or_else(|| EmulatorError::InstallFailed {
            dir: venv_dir.to_path_buf(),
            detail: "pip succeeded but moto[server] or waitress is still not importable".into(),
        })?;
    eprintln!(
        "xtask: installed moto {} in {:.0} s",
        py.version,
        started.elapsed().as_secs_f64()
    );
    Ok(py)
}

/// Holds an exclusive advisory lock on `path` until dropped (closing the file releases it, also
/// when the process dies). Taken on a blocking thread: waiting may last as long as an install.
async fn lock_file(path: PathBuf) -> Result<File, EmulatorError> {
    tokio::task::spawn_blocking(move || {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        file.lock().map_err(io_err("locking", &path))?;
        Ok(file)
    })
    .await
    .expect("lock task panicked")
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process whose command line mentions moto. A zombie has an empty
/// command line, so it counts as gone.
fn is_moto_process(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| cmdline.windows(4).any(|w| w == b"moto"))
        .unwrap_or(false)
}

/// Whether `pid` has exited. If it is our child (a server started by `ensure_running` earlier in
/// this process) it is reaped here, so it does not linger as a zombie; any other process counts
/// as exited once it is gone or a zombie (its parent, usually init, reaps it).
fn exited(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: waitpid with WNOHANG on a specific pid only inspects that process; the status
    // pointer may be null.
    match unsafe { libc::waitpid(raw, std::ptr::null_mut(), libc::WNOHANG) } {
        r if r == raw => true,
        0 => false, // our child, still running (or still exiting)
        _ => fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let (_, after_name) = stat.rsplit_once(')')?;
                after_name.split_whitespace().next().map(str::to_owned)
            })
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

fn signal(pid: u32, sig: libc::c_int) -> Result<(), EmulatorError> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| EmulatorError::Signal {
        pid,
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: kill(2) has no memory-safety preconditions; `raw` is a positive pid that was
    // checked to be a moto server just before.
    if unsafe { libc::kill(raw, sig) } == 0 {
        return Ok(());
    }
    let source = io::Error::last_os_error();
    if source.raw_os_error() == Some(libc::ESRCH) {
        return Ok(()); // exited on its own meanwhile
    }
    Err(EmulatorError::Signal { pid, source })
}

/// Polls until `pid` has exited (and is reaped, if it is our child).
async fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if exited(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Whether process `pid` holds a TCP socket listening on `port` (per `/proc/net/tcp{,6}` and
/// `/proc/<pid>/fd`).
fn owns_listener(pid: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .is_some_and(|inode| inodes.iter().any(|i| i == inode))
        })
    })
}

/// Socket inodes listening on `port`, from the kernel's socket tables.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let port_hex = format!("{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        // Columns: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9
                && cols[3] == LISTEN
                && cols[1].rsplit_once(':').is_some_and(|(_, p)| p == port_hex)
            {
                inodes.push(cols[9].to_string());
            }
        }
    }
    inodes
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn write_file(path: &Path, contents: &str) -> Result<(), EmulatorError> {
    fs::write(path, contents).map_err(io_err("writing", path))
}

fn remove_if_exists(path: &Path) -> Result<(), EmulatorError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), LOG_TAIL_LINES),
        Err(e) => format!("(could not read the log: {e})"),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn endpoint_url(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("http://[{host}]:{port}") // IPv6 literal
    } else {
        format!("http://{host}:{port}")
    }
}

/// `http://host:port` (optionally with a trailing `/`) into host and port.
fn parse_endpoint(endpoint: &str) -> Result<(String, u16), EmulatorError> {
    let bad = || EmulatorError::BadEndpoint(endpoint.to_string());
    let rest = endpoint.strip_prefix("http://").ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains('/') {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

async fn healthy_at(host: &str, port: u16) -> bool {
    matches!(
        http_status(host, port, "GET", HEALTH_PATH, HTTP_TIMEOUT).await,
        Ok(200)
    )
}

/// Sends a body-less HTTP/1.1 request and returns the response's status code. Reads the response
/// to the end (`Connection: close`) so the server does not log a reset connection.
async fn http_status(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        let authority = endpoint_url(host, port);
        let authority = authority.trim_start_matches("http://");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        // Bounded: the dashboard is ~10 kB; anything huge is not moto anyway.
        (&mut stream)
            .take(1 << 20)
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        parse_status_line(&response)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {} s", timeout.as_secs())))
}

fn parse_status_line(response: &[u8]) -> Result<u16, String> {
    let line_end = response
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(response.len());
    let line = String::from_utf8_lossy(&response[..line_end]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") => Ok(code),
        _ => Err(format!("not an HTTP response: {:?}", line.trim_end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4566").unwrap(),
            ("127.0.0.1".to_string(), 4566)
        );
        assert_eq!(
            parse_endpoint("http://localhost:5000/").unwrap(),
            ("localhost".to_string(), 5000)
        );
        assert_eq!(
            parse_endpoint("http://[::1]:5000").unwrap(),
            ("::1".to_string(), 5000)
        );
        for bad in [
            "127.0.0.1:4566",
            "https://127.0.0.1:4566",
            "http://127.0.0.1",
            "http://127.0.0.1:99999",
            "http://:4566",
            "http://h:1/path",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(EmulatorError::BadEndpoint(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn endpoint_round_trips_ipv6() {
        assert_eq!(endpoint_url("::1", 80), "http://[::1]:80");
        assert_eq!(
            parse_endpoint(&endpoint_url("::1", 80)).unwrap(),
            ("::1".into(), 80)
        );
    }

    #[test]
    fn accepts_only_moto_5_2_and_later_5_x() {
        for ok in ["5.2.0", "5.2.1", "5.3.0.dev12", "5.10"] {
            assert!(version_ok(ok), "{ok}");
        }
        for bad in ["5.1.9", "4.2.14", "6.0.0", "", "five"] {
            assert!(!version_ok(bad), "{bad}");
        }
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\nServer: x\r\n"),
            Ok(200)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\r\n"), Ok(404));
        assert!(parse_status_line(b"").is_err());
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn keeps_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
        assert_eq!(last_lines("", 5), "");
    }

    #[tokio::test]
    async fn nothing_listening_is_not_healthy() {
        let port = free_port().unwrap();
        assert!(!healthy_at("127.0.0.1", port).await);
        let err = reset(&endpoint_url("127.0.0.1", port)).await.unwrap_err();
        assert!(matches!(err, EmulatorError::Http { .. }), "{err}");
    }
}
