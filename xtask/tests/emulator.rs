//! The emulator lifecycle against real moto servers: the per-test harness, and the detached
//! server `cargo xtask emulator start|stop|status` manages.
//!
//! Needs `python3` with `moto[server]` (or the project venv). No sleeps: the API under test
//! returns only once a server is healthy, or gone and reaped.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xtask::emulator::{
    self, EmulatorConfig, EmulatorError, Started, Stopped, TestEmulator, ensure_running, reset,
    status, stop,
};

/// A minimal HTTP/1.1 exchange: (status, body). S3 without credentials is what moto serves for
/// an unsigned request, which is enough to create and list buckets.
async fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
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

async fn refuses_connections(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_err()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn test_emulators_run_side_by_side_with_isolated_state_and_stop_on_drop() {
    let started = Instant::now();
    let (a, b) = tokio::join!(TestEmulator::start(), TestEmulator::start());
    eprintln!("two test emulators healthy after {:?}", started.elapsed());

    assert_ne!(a.port(), b.port());
    assert_eq!(a.endpoint(), format!("http://127.0.0.1:{}", a.port()));
    assert!(emulator::is_healthy(&a.endpoint()).await);
    assert!(emulator::is_healthy(&b.endpoint()).await);

    // A bucket created on one server exists only there.
    assert_eq!(http(a.port(), "PUT", "/xtask-isolation-probe").await.0, 200);
    let (status_a, list_a) = http(a.port(), "GET", "/").await;
    let (status_b, list_b) = http(b.port(), "GET", "/").await;
    assert_eq!((status_a, status_b), (200, 200));
    assert!(
        list_a.contains("<Name>xtask-isolation-probe</Name>"),
        "{list_a}"
    );
    assert!(!list_b.contains("xtask-isolation-probe"), "{list_b}");

    // reset wipes that server's state.
    reset(&a.endpoint()).await.unwrap();
    assert!(
        !http(a.port(), "GET", "/")
            .await
            .1
            .contains("xtask-isolation-probe")
    );

    // Drop kills and reaps synchronously: no waiting needed afterwards.
    let (port_a, pid_a) = (a.port(), a.pid());
    drop(a);
    assert!(
        !process_exists(pid_a),
        "pid {pid_a} still exists after drop"
    );
    assert!(refuses_connections(port_a).await);
    assert!(!emulator::is_healthy(&format!("http://127.0.0.1:{port_a}")).await);
    // The other one is unaffected.
    assert!(emulator::is_healthy(&b.endpoint()).await);
}

/// Kills the detached server if the test fails half-way, so it does not outlive the test run.
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid: Option<i32> = fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if let Some(pid) = pid
            && fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(4).any(|w| w == b"moto"))
        {
            // SAFETY: kill(2) on a pid we just checked is our moto server.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn config(state: &tempfile::TempDir, port: u16) -> EmulatorConfig {
    EmulatorConfig {
        host: "127.0.0.1".into(),
        port,
        state_dir: state.path().join("emulator"),
        // Does not exist: python3 on this machine has moto, so nothing is installed.
        venv_dir: state.path().join("venv"),
    }
}

#[tokio::test]
async fn ensure_running_status_and_stop_manage_a_detached_server() {
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&state, free_port());
    let _guard = KillOnDrop(cfg.pid_file());

    let before = status(&cfg).await;
    assert!(!before.healthy && before.pid.is_none(), "{before:?}");
    assert_eq!(stop(&cfg).await.unwrap(), Stopped::NotRunning);

    let t0 = Instant::now();
    let Started::Started { pid } = ensure_running(&cfg).await.unwrap() else {
        panic!("nothing should have been running");
    };
    eprintln!("ensure_running: healthy after {:?}", t0.elapsed());

    assert_eq!(
        fs::read_to_string(cfg.pid_file()).unwrap().trim(),
        pid.to_string()
    );
    let running = status(&cfg).await;
    assert!(running.healthy, "{running:?}");
    assert_eq!(running.pid, Some(pid));
    assert!(
        running
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("5.")),
        "{running:?}"
    );
    assert_eq!(running.endpoint, cfg.endpoint());

    // Detached: leader of its own session, so it survives the CLI and the terminal.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[3], pid.to_string(), "session id in {stat}");
    // Managed policies are loaded, or attaching AWSLambdaBasicExecutionRole fails.
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == b"MOTO_IAM_LOAD_MANAGED_POLICIES=true")
    );
    assert!(
        fs::read_to_string(cfg.log_file())
            .unwrap()
            .contains("GET /moto-api/")
    );

    // Idempotent: a second call finds it.
    assert_eq!(ensure_running(&cfg).await.unwrap(), Started::AlreadyRunning);

    assert_eq!(stop(&cfg).await.unwrap(), Stopped::Stopped { pid });
    assert!(!cfg.pid_file().exists());
    assert!(!process_exists(pid), "stop reaps the server");
    assert!(refuses_connections(cfg.port).await);
    let after = status(&cfg).await;
    assert!(
        !after.healthy && after.pid.is_none() && after.version.is_none(),
        "{after:?}"
    );

    assert_eq!(stop(&cfg).await.unwrap(), Stopped::NotRunning);
}

#[tokio::test]
async fn stop_never_signals_a_process_it_did_not_start() {
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&state, free_port());
    fs::create_dir_all(&cfg.state_dir).unwrap();
    // A stale pid file whose pid now belongs to an unrelated process.
    let mut other = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    fs::write(cfg.pid_file(), format!("{}\n", other.id())).unwrap();

    assert_eq!(stop(&cfg).await.unwrap(), Stopped::NotRunning);
    assert!(
        other.try_wait().unwrap().is_none(),
        "the unrelated process was signalled"
    );
    assert!(!cfg.pid_file().exists(), "the stale pid file is cleaned up");
    assert_eq!(status(&cfg).await.pid, None);

    other.kill().unwrap();
    other.wait().unwrap();
}

#[tokio::test]
async fn ensure_running_explains_a_port_held_by_another_program() {
    let state = tempfile::tempdir().unwrap();
    // Something that is not moto: accepts connections and closes them without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(&state, listener.local_addr().unwrap().port());
    let squatter = tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    let _guard = KillOnDrop(cfg.pid_file());

    let err = ensure_running(&cfg).await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EmulatorError::ExitedEarly { .. }),
        "{message}"
    );
    assert!(message.contains("in use"), "{message}");
    assert!(!cfg.pid_file().exists());
    assert!(!status(&cfg).await.healthy);
    squatter.abort();
}

#[tokio::test]
async fn reset_rejects_bad_endpoints_and_reports_unreachable_ones() {
    let err = reset("localhost:4566").await.unwrap_err();
    assert!(matches!(err, EmulatorError::BadEndpoint(_)), "{err}");

    let port = free_port();
    let err = reset(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, EmulatorError::Http { .. }), "{err}");
    assert!(
        err.to_string().contains("cargo xtask emulator start"),
        "{err}"
    );
}

/// Reads one response from a connection that stays open: its status, after its head and
/// `Content-Length` bytes of body.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    head.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Clients keep their connections open for reuse (`up` alone holds dozens, and a plan in
/// another terminal opens ~70 more): with 150 idle ones held, a new connection is still
/// answered at once, not after the idle ones time out.
#[tokio::test]
async fn idle_connections_held_open_do_not_starve_new_ones() {
    use std::time::Duration;
    let emu = TestEmulator::start().await;
    let port = emu.port();
    let request = format!("GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut idle = Vec::new();
    for n in 0..150 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("connection {n} not answered with {n} others held open"));
        assert_eq!(status, 200);
        idle.push(stream);
    }
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(10), http(port, "GET", "/moto-api/"))
            .await
            .expect("a new connection not answered with 150 others held open");
    assert_eq!(status, 200);
}
