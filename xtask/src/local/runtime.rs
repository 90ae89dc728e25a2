//! The local Lambda data plane: function code runs as real processes that speak the
//! [Lambda Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) to xtask.
//!
//! [`LocalLambda::start`] takes the function definitions (name, code, environment, memory,
//! timeout) from the caller and keeps, per function, a pool of *instances*. An instance is one
//! `bootstrap` process plus its own Runtime API endpoint on `127.0.0.1:<port>` (the process finds
//! it in `AWS_LAMBDA_RUNTIME_API`). One endpoint per process, as each Lambda sandbox has its own,
//! means a request on it can only come from that process: xtask always knows which process holds
//! which invocation, so it can kill exactly that one on a timeout and notice exactly which
//! invocation a crash lost, without trusting anything the process sends.
//!
//! [`LocalLambda::invoke`]:
//! 1. waits for a slot (at most `max_processes` invocations of a function run at once; further
//!    ones queue, where Lambda would throttle: a local user prefers waiting to a 429);
//! 2. takes the most recently used idle instance (warm, LIFO so a sequential caller keeps hitting
//!    the same process), else spawns one (cold start);
//! 3. hands the event to the process's pending `GET /runtime/invocation/next`, and waits for
//!    `POST /runtime/invocation/{id}/response` or `/error`, the process's exit, or the deadline;
//! 4. returns the instance to the pool after a response or a handled error, and kills it after a
//!    timeout, a crash or an init error, as Lambda resets the sandbox then.
//!
//! Each invocation runs in its own task: a caller that stops waiting (a client hanging up on the
//! local gateway) cannot leave a process half-way through an invocation in the pool.
//!
//! Processes get a clean environment, like a Lambda sandbox: nothing of the developer's shell
//! leaks in (in particular no AWS credentials or profile that would send a "local" function to
//! a real account). They get the Lambda reserved variables, the function's variables and, when
//! given, the emulator's endpoint and credentials.

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::http::{self, Request, Response};

/// The Runtime API version prefix every runtime client uses.
pub const API_PREFIX: &str = "/2018-06-01/runtime/";
/// Lambda's synchronous payload limit, for the event and for the response.
pub const MAX_PAYLOAD: usize = 6 * 1024 * 1024;
/// Lambda gives a function's init phase 10 s (on demand).
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many of a process's last output lines a crash report quotes.
const LOG_TAIL: usize = 40;
/// After a crash, how long to wait for the process's last output lines to be read.
const LOG_DRAIN: Duration = Duration::from_secs(1);
/// How often a running function's memory use is compared with its memory size.
const MEMORY_CHECK: Duration = Duration::from_millis(50);
/// After SIGKILL, how long to wait for the exit to be reaped before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Where a function's code is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    /// An executable run as is (a host build's `bootstrap`).
    Binary(PathBuf),
    /// A deployment zip holding `bootstrap`; extracted once when the runtime starts.
    Zip(PathBuf),
}

/// One function as the caller (later: the deployed state) defines it.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    pub code: Code,
    /// The function's configured environment variables.
    pub env: BTreeMap<String, String>,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// `_HANDLER`; `bootstrap` for `provided.al2023` functions.
    pub handler: String,
    /// `AWS_LAMBDA_FUNCTION_VERSION`.
    pub version: String,
}

impl FunctionConfig {
    /// Lambda's defaults: 128 MB, 3 s, version `$LATEST`, handler `bootstrap`.
    pub fn new(name: impl Into<String>, code: Code) -> FunctionConfig {
        FunctionConfig {
            name: name.into(),
            code,
            env: BTreeMap::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            handler: "bootstrap".into(),
            version: "$LATEST".into(),
        }
    }
}

/// The emulator the functions talk to instead of AWS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorAccess {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl EmulatorAccess {
    /// moto accepts any credentials; these are the ones its documentation uses.
    pub fn moto(endpoint: impl Into<String>) -> EmulatorAccess {
        EmulatorAccess {
            endpoint: endpoint.into(),
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        }
    }
}

/// What happens to the functions' stdout and stderr (their "CloudWatch logs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionLogs {
    /// Each line on xtask's stderr, prefixed `[function:pid]`, plus a `REPORT` line per
    /// invocation as Lambda writes.
    Stderr,
    /// Only kept for crash reports.
    Discard,
}

/// Inputs of [`LocalLambda::start`].
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub functions: Vec<FunctionConfig>,
    pub region: String,
    /// Used in the function ARNs the runtime reports (moto's account by default).
    pub account_id: String,
    pub emulator: Option<EmulatorAccess>,
    /// Per function: processes (and so concurrent invocations) at most.
    pub max_processes: usize,
    /// A cold start fails with a timeout if the process has not asked for its first event by
    /// then.
    pub init_timeout: Duration,
    pub logs: FunctionLogs,
    /// Where zips are extracted; a temporary directory (removed at the end) when `None`.
    pub work_dir: Option<PathBuf>,
}

impl LocalConfig {
    pub fn new(functions: Vec<FunctionConfig>) -> LocalConfig {
        LocalConfig {
            functions,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            emulator: None,
            max_processes: 4,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            logs: FunctionLogs::Stderr,
            work_dir: None,
        }
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    /// The function's response (`null` for an empty body; a string if the body is not JSON).
    Ok(Value),
    /// The function reported an error (`/invocation/{id}/error`) or failed to initialise
    /// (`/init/error`, type `Runtime.InitError` or the runtime's own).
    FunctionError { error_type: String, message: String },
    /// The function did not answer in time (or, with `during_init`, did not ask for its first
    /// event within the init timeout); the process was killed.
    Timeout { after: Duration, during_init: bool },
    /// The process exited before answering; `status` as the OS reported it, `logs` its last
    /// output lines.
    Crashed { status: String, logs: Vec<String> },
}

impl InvokeOutcome {
    /// What Lambda's `Invoke` API would return: the payload, and `Some("Unhandled")` as the
    /// `X-Amz-Function-Error` header when the invocation failed.
    pub fn invoke_payload(&self, request_id: &str) -> (Value, Option<&'static str>) {
        match self {
            InvokeOutcome::Ok(v) => (v.clone(), None),
            InvokeOutcome::FunctionError {
                error_type,
                message,
            } => (
                json!({"errorType": error_type, "errorMessage": message}),
                Some("Unhandled"),
            ),
            InvokeOutcome::Timeout { after, .. } => (
                json!({
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": format!(
                        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                        after.as_secs_f64()
                    ),
                }),
                Some("Unhandled"),
            ),
            InvokeOutcome::Crashed { status, .. } => (
                json!({
                    "errorType": "Runtime.ExitError",
                    "errorMessage": format!(
                        "RequestId: {request_id} Error: Runtime exited with error: {status}"
                    ),
                }),
                Some("Unhandled"),
            ),
        }
    }
}

/// One finished invocation.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub request_id: String,
    pub outcome: InvokeOutcome,
    /// The process that served it.
    pub pid: u32,
    /// On a cold start: from spawning the process to its first `/invocation/next`.
    pub init: Option<Duration>,
    /// From handing the event to the process to the outcome (for a cold start that failed
    /// before `/next`, from the spawn).
    pub duration: Duration,
    /// The process's peak resident memory so far (`VmHWM`), when it could be read.
    pub max_rss_kb: Option<u64>,
}

/// Failures of the local runtime itself (as opposed to the function's, see [`InvokeOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("unknown function `{name}`; known functions: {}", known.join(", "))]
    UnknownFunction { name: String, known: Vec<String> },
    #[error("function {function}: cannot start {}: {source}", path.display())]
    Spawn {
        function: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("function {function}: cannot {action} {}: {source}", path.display())]
    Io {
        function: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("function {function}: cannot extract {}: {source}", path.display())]
    Zip {
        function: String,
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("function {function}: {} holds no `bootstrap` executable", path.display())]
    NoBootstrap { function: String, path: PathBuf },
    #[error("cannot listen on 127.0.0.1 for the Runtime API: {0}")]
    Bind(#[source] std::io::Error),
    #[error("the event is {size} bytes, over Lambda's {MAX_PAYLOAD}-byte payload limit")]
    PayloadTooLarge { size: usize },
    #[error("the local Lambda runtime has been shut down")]
    ShutDown,
}

/// A running local Lambda service. Cheap to clone; processes end when the last clone is dropped
/// (or at [`LocalLambda::shutdown`]).
#[derive(Clone)]
pub struct LocalLambda {
    inner: Arc<Inner>,
}

struct Inner {
    functions: BTreeMap<String, Arc<Function>>,
    region: String,
    emulator: Option<EmulatorAccess>,
    init_timeout: Duration,
    logs: FunctionLogs,
    /// Kept for its `Drop`: removes the extracted code.
    _work_dir: Option<tempfile::TempDir>,
}

struct Function {
    config: FunctionConfig,
    bootstrap: PathBuf,
    /// `LAMBDA_TASK_ROOT`: the directory holding `bootstrap`.
    task_root: PathBuf,
    arn: String,
    pool: Pool,
}

impl Function {
    /// Lambda kills a sandbox whose memory use reaches the function's memory size.
    fn memory_limit_kb(&self) -> u64 {
        u64::from(self.config.memory_mb) * 1024
    }
}

impl LocalLambda {
    /// Prepares every function's code (extracting zips) and returns the service. No process is
    /// started until the first invocation of a function.
    pub async fn start(config: LocalConfig) -> Result<LocalLambda, LocalError> {
        let needs_dir = config
            .functions
            .iter()
            .any(|f| matches!(f.code, Code::Zip(_)));
        let (work_dir, temp) = match (&config.work_dir, needs_dir) {
            (Some(dir), _) => (Some(dir.clone()), None),
            (None, true) => {
                let temp = tempfile::Builder::new()
                    .prefix("xtask-lambda-")
                    .tempdir()
                    .map_err(|source| LocalError::Io {
                        function: "*".into(),
                        action: "create a temporary directory in",
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (Some(temp.path().to_path_buf()), Some(temp))
            }
            (None, false) => (None, None),
        };
        let mut functions = BTreeMap::new();
        for spec in config.functions {
            let bootstrap = match &spec.code {
                Code::Binary(path) => path.clone(),
                Code::Zip(zip) => {
                    let dir = work_dir
                        .as_ref()
                        .expect("a work dir exists when there are zips")
                        .join(&spec.name);
                    let (name, zip, dir) = (spec.name.clone(), zip.clone(), dir.clone());
                    tokio::task::spawn_blocking(move || extract(&name, &zip, &dir))
                        .await
                        .expect("extraction task panicked")?
                }
            };
            let bootstrap = std::path::absolute(&bootstrap).unwrap_or(bootstrap);
            let task_root = bootstrap
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"));
            let arn = format!(
                "arn:aws:lambda:{}:{}:function:{}",
                config.region, config.account_id, spec.name
            );
            functions.insert(
                spec.name.clone(),
                Arc::new(Function {
                    bootstrap,
                    task_root,
                    arn,
                    pool: Pool::new(config.max_processes),
                    config: spec,
                }),
            );
        }
        Ok(LocalLambda {
            inner: Arc::new(Inner {
                functions,
                region: config.region,
                emulator: config.emulator,
                init_timeout: config.init_timeout,
                logs: config.logs,
                _work_dir: temp,
            }),
        })
    }

    /// The functions this runtime serves, by name.
    pub fn function_names(&self) -> Vec<String> {
        self.inner.functions.keys().cloned().collect()
    }

    /// Invokes `function` synchronously (`RequestResponse`) with `payload` as the event.
    pub async fn invoke(&self, function: &str, payload: Value) -> Result<Invoked, LocalError> {
        let f = self.function(function)?;
        let payload = serde_json::to_vec(&payload).expect("a JSON value always serialises");
        if payload.len() > MAX_PAYLOAD {
            return Err(LocalError::PayloadTooLarge {
                size: payload.len(),
            });
        }
        let inner = self.inner.clone();
        match tokio::spawn(async move { inner.run(f, payload).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(LocalError::ShutDown),
        }
    }

    /// How many processes of `function` are alive (idle or busy).
    pub fn live_processes(&self, function: &str) -> Result<usize, LocalError> {
        Ok(self.function(function)?.pool.live.load(Ordering::SeqCst))
    }

    /// The pids of `function`'s idle (warm) processes, most recently used last.
    pub fn idle_pids(&self, function: &str) -> Result<Vec<u32>, LocalError> {
        Ok(self.function(function)?.pool.idle_pids())
    }

    /// Refuses new invocations, then kills every idle process and waits for it to exit.
    /// Invocations already running finish; their processes are killed when they return.
    pub async fn shutdown(&self) {
        for f in self.inner.functions.values() {
            f.pool.close().await;
        }
    }

    fn function(&self, name: &str) -> Result<Arc<Function>, LocalError> {
        self.inner
            .functions
            .get(name)
            .cloned()
            .ok_or_else(|| LocalError::UnknownFunction {
                name: name.into(),
                known: self.function_names(),
            })
    }
}

/// Extracts `zip` into `dir` and returns the `bootstrap` inside, made executable.
fn extract(function: &str, zip: &Path, dir: &Path) -> Result<PathBuf, LocalError> {
    let io = |action, path: &Path| {
        let (function, path) = (function.to_owned(), path.to_path_buf());
        move |source| LocalError::Io {
            function,
            action,
            path,
            source,
        }
    };
    let zip_err = |source| LocalError::Zip {
        function: function.into(),
        path: zip.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(zip).map_err(io("open", zip))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    // A fresh directory: a previous extraction of other code must not survive in it.
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io("remove", dir))?;
    }
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    archive.extract(dir).map_err(zip_err)?;
    let bootstrap = dir.join("bootstrap");
    if !bootstrap.is_file() {
        return Err(LocalError::NoBootstrap {
            function: function.into(),
            path: zip.to_path_buf(),
        });
    }
    // Lambda runs `bootstrap` whatever mode the zip recorded; do the same.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
        .map_err(io("make executable", &bootstrap))?;
    Ok(bootstrap)
}

/// What the process answered for the invocation it holds.
#[derive(Debug)]
enum Reply {
    Response(Vec<u8>),
    Error { error_type: String, message: String },
    InitError { error_type: String, message: String },
}

/// How waiting for an invocation's answer ended.
#[derive(Debug)]
enum Ending {
    /// The process answered.
    Replied(Reply),
    /// The process exited without answering.
    Crashed,
    /// The process's memory use went over the function's memory size.
    OutOfMemory,
    /// No answer within the function's timeout or, `during_init`, no `/next` within the init
    /// timeout.
    TimedOut { after: Duration, during_init: bool },
}

/// A function's instances: the slots that bound its concurrency, the warm processes waiting
/// for an event, and how many processes are alive.
struct Pool {
    slots: Arc<Semaphore>,
    /// Warm instances, most recently used last.
    idle: Mutex<Vec<Arc<Instance>>>,
    /// Processes alive (idle or busy); shared with each instance so its `Drop` can count down.
    live: Arc<AtomicUsize>,
}

impl Pool {
    fn new(max_processes: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(max_processes.max(1))),
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for a slot; held for the whole invocation.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, LocalError> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LocalError::ShutDown)
    }

    /// The most recently used idle instance that is still running.
    fn take_warm(&self) -> Option<Arc<Instance>> {
        loop {
            let popped = self.idle.lock().expect("idle list poisoned").pop()?;
            // Died while idle (killed from outside, or exited by itself): forget it.
            if !popped.exited() {
                return Some(popped);
            }
        }
    }

    /// Returns an instance after an invocation: to the idle list when it may serve another
    /// one, else killed. Called before the slot is released, so whoever gets the slot next
    /// finds this process instead of starting another one beyond the limit.
    async fn give_back(&self, instance: Arc<Instance>, reusable: bool) {
        if reusable && !instance.exited() {
            self.idle.lock().expect("idle list poisoned").push(instance);
        } else {
            instance.kill_and_wait().await;
        }
    }

    fn idle_pids(&self) -> Vec<u32> {
        self.idle
            .lock()
            .expect("idle list poisoned")
            .iter()
            .map(|i| i.pid)
            .collect()
    }

    /// Refuses new invocations and kills the idle processes.
    async fn close(&self) {
        self.slots.close();
        let idle: Vec<_> = self
            .idle
            .lock()
            .expect("idle list poisoned")
            .drain(..)
            .collect();
        for instance in idle {
            instance.kill_and_wait().await;
        }
    }
}

impl Inner {
    async fn run(
        self: Arc<Self>,
        f: Arc<Function>,
        payload: Vec<u8>,
    ) -> Result<Invoked, LocalError> {
        let permit = f.pool.slot().await?;
        let (instance, cold) = match f.pool.take_warm() {
            Some(i) => (i, false),
            None => (self.spawn(&f).await?, true),
        };
        let request_id = request_id();
        let answer = instance.dispatch(&request_id, payload, f.config.timeout);
        let started = Instant::now();
        let (ending, dispatched) = self.wait(&f, &instance, answer, started).await;
        let duration = dispatched.unwrap_or(started).elapsed();
        let max_rss_kb = peak_rss_kb(instance.pid);
        let init = cold
            .then(|| {
                instance
                    .chan
                    .first_next
                    .get()
                    .map(|at| *at - instance.spawned)
            })
            .flatten();
        // A peak over the limit between two checks counts too: Lambda would have killed it.
        let ending = match max_rss_kb {
            Some(kb) if kb > f.memory_limit_kb() => Ending::OutOfMemory,
            _ => ending,
        };
        let (outcome, reusable) = settle(ending, &instance, &f.config, &request_id).await;
        if self.logs == FunctionLogs::Stderr {
            eprintln!(
                "[{}:{}] {}",
                f.config.name,
                instance.pid,
                report_line(&request_id, &f.config, duration, max_rss_kb, init, &outcome)
            );
        }
        let pid = instance.pid;
        f.pool.give_back(instance, reusable).await;
        drop(permit);
        Ok(Invoked {
            request_id,
            outcome,
            pid,
            init,
            duration,
            max_rss_kb,
        })
    }

    /// Waits for the process's answer, its exit, its memory going over the limit or the
    /// deadline, whichever comes first; also returns when the process took the event.
    async fn wait(
        &self,
        f: &Function,
        instance: &Instance,
        (mut reply_rx, mut taken_rx): Answer,
        started: Instant,
    ) -> (Ending, Option<Instant>) {
        let mut exit = instance.exit.clone();
        // Until the process takes the event with `/next` (at once when warm; the init phase on
        // a cold start) the init timeout applies; from then on, the function's timeout.
        let mut dispatched: Option<Instant> = None;
        let mut taken_done = false;
        // Lambda kills a sandbox whose memory use reaches the function's memory size: watch the
        // process's resident set while it runs.
        let mut memory_check = tokio::time::interval(MEMORY_CHECK);
        let ending = loop {
            let deadline = match dispatched {
                Some(at) => at + f.config.timeout,
                None => started + self.init_timeout,
            };
            tokio::select! {
                // A reply wins over an exit noticed at the same time: a process may answer
                // and then exit.
                biased;
                reply = &mut reply_rx => match reply {
                    Ok(reply) => break Ending::Replied(reply),
                    // The pending slot was replaced: cannot happen while we hold the instance.
                    Err(_) => break Ending::Crashed,
                },
                at = &mut taken_rx, if !taken_done => {
                    taken_done = true;
                    if let Ok(at) = at {
                        dispatched = Some(at);
                    }
                }
                _ = exit.wait_for(Option::is_some) => {
                    break match reply_rx.try_recv() {
                        Ok(reply) => Ending::Replied(reply),
                        Err(_) => Ending::Crashed,
                    };
                }
                _ = memory_check.tick() => {
                    if rss_kb(instance.pid).is_some_and(|kb| kb > f.memory_limit_kb()) {
                        break Ending::OutOfMemory;
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    break match dispatched {
                        Some(_) => Ending::TimedOut { after: f.config.timeout, during_init: false },
                        None => Ending::TimedOut { after: self.init_timeout, during_init: true },
                    };
                }
            }
        };
        (ending, dispatched)
    }

    /// Starts one process of `f` with its own Runtime API endpoint.
    async fn spawn(&self, f: &Arc<Function>) -> Result<Arc<Instance>, LocalError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(LocalError::Bind)?;
        let port = listener.local_addr().map_err(LocalError::Bind)?.port();
        let (outbox, inbox) = mpsc::channel(1);
        let chan = Arc::new(Channel {
            inbox: tokio::sync::Mutex::new(inbox),
            outbox,
            current: Mutex::new(None),
            first_next: OnceLock::new(),
            arn: f.arn.clone(),
        });
        let server = AbortOnDrop(tokio::spawn(serve(listener, chan.clone())));

        let spec = &f.config;
        let mut cmd = self.command(f, port);
        let spawned = Instant::now();
        let mut child = cmd.spawn().map_err(|source| LocalError::Spawn {
            function: spec.name.clone(),
            path: f.bootstrap.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        f.pool.live.fetch_add(1, Ordering::SeqCst);

        let logs = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let prefix = format!("[{}:{pid}] ", spec.name);
        let echo = self.logs == FunctionLogs::Stderr;
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(pump(out, logs.clone(), prefix.clone(), echo)));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(pump(err, logs.clone(), prefix, echo)));
        }

        let (exit, kill) = supervise(child);
        Ok(Arc::new(Instance {
            pid,
            spawned,
            chan,
            exit,
            kill: Mutex::new(Some(kill)),
            logs,
            readers: Mutex::new(readers),
            live: f.pool.live.clone(),
            _server: server,
        }))
    }

    /// The process of `f` in a clean environment, like a Lambda sandbox's, talking to the
    /// Runtime API on `port`.
    fn command(&self, f: &Function, port: u16) -> tokio::process::Command {
        let spec = &f.config;
        let mut cmd = tokio::process::Command::new(&f.bootstrap);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            // No profile files: a developer's ~/.aws/config must not redirect a local function.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            // Without emulator credentials the SDK would probe the EC2 metadata service and
            // stall for seconds before failing.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(&spec.env);
        if let Some(emu) = &self.emulator {
            cmd.env("AWS_ENDPOINT_URL", &emu.endpoint)
                .env("AWS_ACCESS_KEY_ID", &emu.access_key_id)
                .env("AWS_SECRET_ACCESS_KEY", &emu.secret_access_key);
        }
        // Reserved variables last: as on Lambda, the function's configuration cannot override them.
        cmd.env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_VERSION", &spec.version)
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream_name(&spec.version))
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("AWS_REGION", &self.region)
            .env("AWS_DEFAULT_REGION", &self.region)
            .env("LAMBDA_TASK_ROOT", &f.task_root)
            .env("LAMBDA_RUNTIME_DIR", &f.task_root)
            .env("_HANDLER", &spec.handler)
            .current_dir(&f.task_root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Belt and braces: a Child dropped without our explicit kill still dies.
            .kill_on_drop(true);
        cmd
    }
}

/// Starts the supervisor of `child`, which owns it: it reaps the exit and is the only one to
/// kill, so a pid is never signalled after it was reaped (and possibly reused). Returns the
/// exit status as it becomes known, and the sender whose use or drop kills the process.
fn supervise(
    mut child: tokio::process::Child,
) -> (watch::Receiver<Option<String>>, oneshot::Sender<()>) {
    let (exit_tx, exit_rx) = watch::channel(None);
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let status = tokio::select! {
            status = child.wait() => status,
            // Fires on an explicit kill and when the instance is dropped.
            _ = kill_rx => {
                let _ = child.start_kill();
                child.wait().await
            }
        };
        let text = match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        let _ = exit_tx.send(Some(text));
    });
    (exit_rx, kill_tx)
}

/// The receivers of an invocation's reply and of the moment the process took its event.
type Answer = (oneshot::Receiver<Reply>, oneshot::Receiver<Instant>);

/// What an ending means for the caller, and whether the instance may serve another
/// invocation (Lambda resets the sandbox after a timeout, a crash or an init error).
async fn settle(
    ending: Ending,
    instance: &Instance,
    config: &FunctionConfig,
    request_id: &str,
) -> (InvokeOutcome, bool) {
    match ending {
        Ending::OutOfMemory => {
            instance.kill_and_wait().await;
            (
                InvokeOutcome::FunctionError {
                    error_type: "Runtime.OutOfMemory".into(),
                    message: format!(
                        "RequestId: {request_id} Error: Runtime exited with error: signal: killed (memory size {} MB exceeded)",
                        config.memory_mb
                    ),
                },
                false,
            )
        }
        Ending::Replied(Reply::Response(body)) => (InvokeOutcome::Ok(response_value(&body)), true),
        Ending::Replied(Reply::Error {
            error_type,
            message,
        }) => (
            InvokeOutcome::FunctionError {
                error_type,
                message,
            },
            true,
        ),
        Ending::Replied(Reply::InitError {
            error_type,
            message,
        }) => (
            InvokeOutcome::FunctionError {
                error_type,
                message,
            },
            false,
        ),
        Ending::TimedOut { after, during_init } => {
            (InvokeOutcome::Timeout { after, during_init }, false)
        }
        Ending::Crashed => {
            instance.kill_and_wait().await;
            instance.drain_logs().await;
            let status = instance
                .exit
                .borrow()
                .clone()
                .unwrap_or_else(|| "unknown".into());
            (
                InvokeOutcome::Crashed {
                    status,
                    logs: instance.log_tail(),
                },
                false,
            )
        }
    }
}

/// The `REPORT` line Lambda writes after each invocation.
fn report_line(
    request_id: &str,
    config: &FunctionConfig,
    duration: Duration,
    max_rss_kb: Option<u64>,
    init: Option<Duration>,
    outcome: &InvokeOutcome,
) -> String {
    format!(
        "REPORT RequestId: {request_id} Duration: {:.2} ms Memory Size: {} MB Max Memory Used: {} MB{}{}",
        duration.as_secs_f64() * 1e3,
        config.memory_mb,
        max_rss_kb.map_or(0, |kb| kb / 1024),
        init.map(|d| format!(" Init Duration: {:.2} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_default(),
        match outcome {
            InvokeOutcome::Ok(_) => "",
            InvokeOutcome::FunctionError { .. } => " Status: error",
            InvokeOutcome::Timeout { .. } => " Status: timeout",
            InvokeOutcome::Crashed { .. } => " Status: crashed",
        }
    )
}

/// One process and its endpoint.
struct Instance {
    pid: u32,
    spawned: Instant,
    chan: Arc<Channel>,
    /// `Some(exit status)` once the process has exited and was reaped.
    exit: watch::Receiver<Option<String>>,
    kill: Mutex<Option<oneshot::Sender<()>>>,
    logs: Arc<Mutex<VecDeque<String>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    live: Arc<AtomicUsize>,
    _server: AbortOnDrop,
}

impl Instance {
    /// Hands `payload` to the process as invocation `request_id` (its `/next` takes it).
    fn dispatch(&self, request_id: &str, payload: Vec<u8>, timeout: Duration) -> Answer {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (taken_tx, taken_rx) = oneshot::channel();
        *self.chan.current.lock().expect("current poisoned") = Some(Pending {
            request_id: request_id.to_string(),
            reply: reply_tx,
        });
        self.chan
            .outbox
            .try_send(Dispatch {
                request_id: request_id.to_string(),
                payload,
                timeout,
                taken: taken_tx,
            })
            .expect("an idle instance has no queued event");
        (reply_rx, taken_rx)
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// SIGKILL (if still running) and wait, bounded, for the exit to be reaped.
    async fn kill_and_wait(&self) {
        drop(self.kill.lock().expect("kill poisoned").take());
        let mut exit = self.exit.clone();
        let _ = tokio::time::timeout(KILL_WAIT, exit.wait_for(Option::is_some)).await;
    }

    /// Waits (bounded) until the output pipes are read to the end, so a crash report holds the
    /// last lines the process wrote.
    async fn drain_logs(&self) {
        let readers: Vec<_> = self
            .readers
            .lock()
            .expect("readers poisoned")
            .drain(..)
            .collect();
        let _ = tokio::time::timeout(LOG_DRAIN, futures::future::join_all(readers)).await;
    }

    fn log_tail(&self) -> Vec<String> {
        self.logs
            .lock()
            .expect("logs poisoned")
            .iter()
            .cloned()
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Dropping the kill sender makes the supervisor kill the process.
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Aborts a task when dropped: an instance's server must not outlive the instance.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The state an instance's Runtime API endpoint serves from.
struct Channel {
    /// Events for this process; `/next` waits here.
    inbox: tokio::sync::Mutex<mpsc::Receiver<Dispatch>>,
    outbox: mpsc::Sender<Dispatch>,
    /// The invocation the process holds, answered by `/response` or `/error`.
    current: Mutex<Option<Pending>>,
    /// When the process first asked for an event: the end of its init phase.
    first_next: OnceLock<Instant>,
    arn: String,
}

struct Dispatch {
    request_id: String,
    payload: Vec<u8>,
    timeout: Duration,
    /// When `/next` handed the event over.
    taken: oneshot::Sender<Instant>,
}

struct Pending {
    request_id: String,
    reply: oneshot::Sender<Reply>,
}

/// Accepts connections on an instance's endpoint until the instance drops (aborting this task
/// aborts the connections with it, as they live in the `JoinSet`).
async fn serve(listener: TcpListener, chan: Arc<Channel>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let chan = chan.clone();
        connections.spawn(http::serve_connection(stream, move |req| {
            let chan = chan.clone();
            async move { chan.handle(req).await }
        }));
        while connections.try_join_next().is_some() {}
    }
}

impl Channel {
    async fn handle(&self, req: Request) -> Response {
        let route = req.path.strip_prefix(API_PREFIX).unwrap_or("");
        let parts: Vec<&str> = route.split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["invocation", "next"]) => self.next().await,
            ("POST", ["invocation", id, "response"]) => {
                if req.body.len() > MAX_PAYLOAD {
                    // Lambda fails the invocation, not the runtime, for an oversized response.
                    let message = format!(
                        "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_PAYLOAD} bytes).",
                        req.body.len()
                    );
                    self.complete(
                        id,
                        Reply::Error {
                            error_type: "Function.ResponseSizeTooLarge".into(),
                            message: message.clone(),
                        },
                    );
                    return error_response(413, "RequestEntityTooLarge", &message);
                }
                self.accept(id, Reply::Response(req.body))
            }
            ("POST", ["invocation", id, "error"]) => {
                let (error_type, message) = error_body(&req);
                self.accept(
                    id,
                    Reply::Error {
                        error_type,
                        message,
                    },
                )
            }
            ("POST", ["init", "error"]) => {
                let (error_type, message) = error_body(&req);
                let pending = self.current.lock().expect("current poisoned").take();
                if let Some(p) = pending {
                    let _ = p.reply.send(Reply::InitError {
                        error_type,
                        message,
                    });
                }
                Response::json(202, &json!({"status": "OK"}))
            }
            _ => error_response(
                404,
                "UnknownRoute",
                &format!("{} {} is not a Runtime API route", req.method, req.path),
            ),
        }
    }

    /// `GET /invocation/next`: long-polls for this process's next event.
    async fn next(&self) -> Response {
        self.first_next.get_or_init(Instant::now);
        let dispatch = {
            let mut inbox = self.inbox.lock().await;
            match inbox.recv().await {
                Some(d) => d,
                None => return error_response(500, "ShutDown", "the runtime is shutting down"),
            }
        };
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(dispatch.timeout)
            .as_millis();
        let _ = dispatch.taken.send(Instant::now());
        Response {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Lambda-Runtime-Aws-Request-Id".into(), dispatch.request_id),
                ("Lambda-Runtime-Deadline-Ms".into(), deadline_ms.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn".into(),
                    self.arn.clone(),
                ),
                ("Lambda-Runtime-Trace-Id".into(), trace_id()),
            ],
            body: dispatch.payload,
        }
    }

    fn accept(&self, id: &str, reply: Reply) -> Response {
        if self.complete(id, reply) {
            Response::json(202, &json!({"status": "OK"}))
        } else {
            error_response(
                400,
                "InvalidRequestID",
                &format!("no invocation {id} is waiting for an answer from this runtime"),
            )
        }
    }

    /// Delivers the answer for invocation `id`, if that is the one the process holds.
    fn complete(&self, id: &str, reply: Reply) -> bool {
        let mut current = self.current.lock().expect("current poisoned");
        match current.take() {
            Some(p) if p.request_id == id => {
                let _ = p.reply.send(reply);
                true
            }
            other => {
                *current = other;
                false
            }
        }
    }
}

fn error_response(status: u16, error_type: &str, message: &str) -> Response {
    Response::json(
        status,
        &json!({"errorType": error_type, "errorMessage": message}),
    )
}

/// The runtime's error document `{"errorType", "errorMessage"}`; falls back to the
/// `Lambda-Runtime-Function-Error-Type` header and the raw body for runtimes that send less.
fn error_body(req: &Request) -> (String, String) {
    let doc: Option<Value> = serde_json::from_slice(&req.body).ok();
    let field = |name| {
        doc.as_ref()
            .and_then(|d| d.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let error_type = field("errorType")
        .or_else(|| {
            req.header("lambda-runtime-function-error-type")
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Unhandled".into());
    let message =
        field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(&req.body).into_owned());
    (error_type, message)
}

fn response_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// Forwards a process's output, line by line, to the tail buffer (and xtask's stderr).
async fn pump(
    stream: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    prefix: String,
    echo: bool,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("{prefix}{line}");
        }
        let mut tail = tail.lock().expect("logs poisoned");
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// `VmRSS` of `/proc/<pid>/status`: the resident set now.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `VmHWM` of `/proc/<pid>/status`: the peak resident set, what Lambda reports as "Max Memory
/// Used".
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A random UUID v4, the shape of Lambda request ids.
pub(crate) fn request_id() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// An X-Ray trace header: `Root=1-<epoch secs hex>-<96 random bits>;Parent=...;Sampled=0`.
fn trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "Root=1-{secs:08x}-{:08x}{:016x};Parent={:016x};Sampled=0",
        fastrand::u32(..),
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

/// `2026/11/25/[$LATEST]<32 hex>`, the shape of Lambda log stream names.
fn log_stream_name(version: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}/{m:02}/{d:02}/[{version}]{:016x}{:016x}",
        fastrand::u64(..),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_lambda_shapes() {
        let id = request_id();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(trace_id().starts_with("Root=1-"));
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert!(log_stream_name("$LATEST").contains("/[$LATEST]"));
    }

    #[test]
    fn error_documents_and_bodies() {
        let req = |body: &str, header: Option<&str>| Request {
            method: "POST".into(),
            path: "/".into(),
            headers: header
                .map(|h| vec![("Lambda-Runtime-Function-Error-Type".into(), h.into())])
                .unwrap_or_default(),
            body: body.as_bytes().to_vec(),
            close: false,
        };
        assert_eq!(
            error_body(&req(r#"{"errorType":"E","errorMessage":"m"}"#, None)),
            ("E".into(), "m".into())
        );
        assert_eq!(
            error_body(&req("boom", Some("Runtime.X"))),
            ("Runtime.X".into(), "boom".into())
        );
        assert_eq!(response_value(b""), Value::Null);
        assert_eq!(response_value(b"{\"a\":1}"), json!({"a": 1}));
        assert_eq!(response_value(b"plain"), json!("plain"));
    }

    #[test]
    fn invoke_payloads_match_lambda() {
        let (body, header) = InvokeOutcome::Timeout {
            after: Duration::from_secs(3),
            during_init: false,
        }
        .invoke_payload("r1");
        assert_eq!(header, Some("Unhandled"));
        assert_eq!(
            body["errorMessage"],
            "RequestId: r1 Error: Task timed out after 3.00 seconds"
        );
        assert_eq!(
            InvokeOutcome::Ok(json!(1)).invoke_payload("r"),
            (json!(1), None)
        );
    }
}
