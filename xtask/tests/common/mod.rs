//! Shared by the local data plane's integration tests: a blocking HTTP/1.1 client, the
//! std-only fixture function, stand-in deployment zips, and `cargo xtask up` as a child process
//! against a private emulator.

#![allow(dead_code)] // each test binary uses its own subset

pub mod faults;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) to `url` (`http://host:port/path?query`).
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The std-only fixture function (`fixtures/runtime/fixture.rs`), compiled once per test
/// binary with `rustc`.
pub fn fixture_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runtime/fixture.rs");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("runtime-fixture-{}", std::process::id()));
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let status = Command::new(rustc)
            .args(["--edition", "2021", "-O", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("running rustc");
        assert!(status.success(), "compiling {}", src.display());
        out
    })
}

/// `<dir>/<function>.zip` for every function of the stack, each holding the fixture function.
pub fn fixture_zips(dir: &Path) {
    fixture_zips_variant(dir, 0);
}

/// [`fixture_zips`] with `variant` bytes appended to the binary (an ELF runs the same with
/// trailing data): another artifact, so another published version, of the same behaviour.
pub fn fixture_zips_variant(dir: &Path, variant: usize) {
    let mut bin = std::fs::read(fixture_binary()).unwrap();
    bin.extend(std::iter::repeat_n(0u8, variant));
    for f in stacks::invoice_app::FUNCTIONS {
        let zip = xtask::build::zip_bootstrap(Path::new("bootstrap"), &bin).unwrap();
        std::fs::write(dir.join(format!("{f}.zip")), zip).unwrap();
    }
}

/// The five real functions built for this machine once per test binary (as `cargo xtask up`
/// builds them), returning the directory holding their zips.
pub fn real_zips() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["--env", "local", "build"])
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .expect("running xtask build");
        assert!(out.success(), "building the functions for this machine");
        eprintln!(
            "built the functions in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("target/lambda-host")
    })
}

/// `cargo xtask up` running against its own emulator.
pub struct Up {
    pub emu: xtask::emulator::TestEmulator,
    child: Child,
    /// `http://127.0.0.1:<port>/<stage>`.
    pub url: String,
    pub api_key: String,
    pub ready: Value,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    /// Starts an emulator and `up --port 0 --json` with the zips in `zips` and extra
    /// arguments (`--set ...`, `--no-streams`), and waits for it to be ready.
    pub async fn start(zips: &Path, extra: &[&str]) -> Up {
        let emu = xtask::emulator::TestEmulator::start().await;
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("up.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "--env",
                "local",
                "up",
                "--port",
                "0",
                "--json",
                "--artifacts-dir",
            ])
            .arg(zips)
            .args(extra)
            .env("XTASK__EMULATOR__PORT", emu.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting xtask up");
        let stdout = child.stdout.take().unwrap();
        let stderr_path = stderr.clone();
        let ready = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                match lines.next() {
                    Some(Ok(line)) => {
                        if let Ok(v) = serde_json::from_str::<Value>(&line)
                            && v["event"] == "ready"
                        {
                            // Keep draining stdout so `up` never blocks on a full pipe.
                            std::thread::spawn(move || for _ in lines {});
                            return v;
                        }
                    }
                    _ => panic!(
                        "xtask up ended before it was ready:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    ),
                }
            }
        })
        .await
        .unwrap();
        Up {
            emu,
            url: ready["url"].as_str().unwrap().to_string(),
            api_key: ready["api_key"].as_str().unwrap().to_string(),
            ready,
            child,
            stderr,
            _dir: dir,
        }
    }

    /// `up`'s stderr so far (request lines, function logs, reloads).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// A request to `<url><path>` with the API key.
    pub fn get(&self, path: &str) -> HttpResponse {
        let url = format!("{}{path}", self.url);
        http("GET", &url, &[("x-api-key", &self.api_key)], b"")
    }

    pub fn post_json(&self, path: &str, body: &[u8]) -> HttpResponse {
        let url = format!("{}{path}", self.url);
        http(
            "POST",
            &url,
            &[
                ("x-api-key", &self.api_key),
                ("content-type", "application/json"),
            ],
            body,
        )
    }

    /// SIGTERM, as Ctrl-C would, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "xtask up did not stop within 20 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, failing after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fixture file's text.
pub fn fixture_text(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One finished run of the `xtask` binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The document of an apply that succeeded.
    pub fn applied(self) -> Value {
        assert_eq!(self.code, 0, "apply failed:\n{}", self.stderr);
        self.json()
    }

    /// Exit code (0: no changes, 2: changes) and document of `plan --detailed-exitcode`.
    pub fn planned(self) -> (i32, Value) {
        assert!(
            self.code == 0 || self.code == 2,
            "plan failed ({}):\n{}",
            self.code,
            self.stderr
        );
        (self.code, self.json())
    }

    /// stdout as the `--json` document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// SDK clients (counting calls, as xtask's own) for a test's emulator.
pub async fn emulator_clients(emu: &xtask::emulator::TestEmulator) -> xtask::aws::Clients {
    clients_at(emu.endpoint()).await
}

/// SDK clients (counting calls) for a local endpoint: a fault proxy in front of an emulator.
pub async fn clients_at(endpoint: String) -> xtask::aws::Clients {
    xtask::aws::Clients::new(
        &xtask::aws::Target::Emulator {
            endpoint,
            region: "us-east-1".into(),
        },
        xtask::aws::CallLog::new(false),
    )
    .await
}

/// The lock parameter of the tests' environment (`test`, app `invoice-app`).
pub const TEST_LOCK: &str = "/invoice-app/test/xtask-lock";

/// The value of [`TEST_LOCK`]; `None` when the parameter does not exist (any other error
/// fails the test).
pub async fn test_lock(aws: &xtask::aws::Clients) -> Option<String> {
    match aws.ssm.get_parameter().name(TEST_LOCK).send().await {
        Ok(o) => Some(
            o.parameter()
                .and_then(|p| p.value())
                .unwrap_or_default()
                .to_string(),
        ),
        Err(e) => {
            let e = e.into_service_error();
            assert!(e.is_parameter_not_found(), "reading the lock: {e:?}");
            None
        }
    }
}

/// An engine context on a test's emulator: its clients, moto's default account, a minute for
/// any wait.
pub async fn emulator_ctx(emu: &xtask::emulator::TestEmulator) -> xtask::engine::Ctx {
    ctx_with(emulator_clients(emu).await)
}

/// [`emulator_ctx`] with other clients (say, to a fault proxy in front of the emulator).
pub fn ctx_with(aws: xtask::aws::Clients) -> xtask::engine::Ctx {
    xtask::engine::Ctx {
        aws,
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        wait_timeout: Duration::from_secs(60),
        options: Default::default(),
    }
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs `xtask --env <env> --json --config fixtures/<config> <args>` against the emulator on
/// `port` (passed through the environment layer, so a test's own `--set` flags do not replace
/// it), without stdin.
pub fn run_xtask(env: &str, config: &str, port: u16, args: &[&str]) -> Run {
    let out = xtask_command(env, config, port, args)
        .output()
        .expect("running xtask");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command [`run_xtask`] runs, for a test that runs it otherwise (in the background, say).
pub fn xtask_command(env: &str, config: &str, port: u16, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(["--env", env, "--json", "--config"])
        .arg(fixture(config))
        .args(args)
        .env("XTASK__EMULATOR__PORT", port.to_string())
        .env_remove("XTASK_ENV")
        .stdin(Stdio::null());
    command
}

/// Writes of one operation (`TagResource`, any service) in an apply's `--json` document.
pub fn writes_of(doc: &Value, operation: &str) -> u64 {
    doc["api_calls"]["writes_by_operation"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.ends_with(&format!(".{operation}")))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum()
}
