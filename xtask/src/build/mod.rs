//! `cargo xtask build`: compile the Lambda functions and package each as a reproducible zip.
//!
//! A function is a crate directly under `functions/` whose manifest says so
//! (`[package.metadata.lambda] function = true`) and whose binary is named after it
//! (`[[bin]] name = "insert-invoice"`); library crates such as `invoice-core` are skipped, and
//! nobody keeps a list by hand. Each binary is zipped as `bootstrap`, the name
//! `provided.al2023` executes ([`package`]), after its ELF is checked ([`elf`]).
//!
//! One cargo invocation builds every selected function, so cargo compiles the shared
//! dependencies once and links the binaries in parallel (distinct binary names are what make
//! that possible: five `bootstrap`s would collide in one output directory).
//!
//! - For Lambda: `cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.34`, linked
//!   against glibc 2.34 whatever the build machine has ([`zigbuild`]), with the size-tuned
//!   release profile of the workspace `Cargo.toml`, plus what only Lambda builds get: the
//!   non-PIE code model ([`LAMBDA_RUSTFLAGS`]) and each function's `lambda` feature (compile-time
//!   log filtering). Both stay out of the host build, which must match xtask's own.
//! - For the host (`cargo xtask up`, the end-to-end tests): `cargo build` with the dev profile,
//!   selecting xtask's package too (`-p xtask`, none of its targets). Selecting it makes cargo
//!   resolve features as for xtask's own build, and xtask's manifest asks for a superset of
//!   what the functions need, so the host build finds the SDK and everything under it already
//!   compiled by `cargo xtask` instead of compiling it a second time (checked by the test
//!   `host_builds_share_xtask_s_dependencies`).
//!
//! Incremental at both levels: cargo skips compiling what is fresh, and a zip is rewritten only
//! when the binary's SHA-256 differs from the one recorded beside it
//! (`<out_dir>/<name>.zip.json`), so an unchanged tree rebuilds and repackages nothing and the
//! deployer sees the same `CodeSha256` as last time.

mod elf;
mod package;
mod zigbuild;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use elf::{ElfInfo, LAMBDA_GLIBC, check_lambda, check_machine, glibc_ceiling, inspect};
pub use package::{ENTRY_NAME, sha256_hex_and_b64, zip_bootstrap};
pub use zigbuild::{ensure_zigbuild, find_zigbuild, venv_bin, zig_env};

/// The rust target for Lambda `provided.al2023` x86_64; the `.2.34` suffix is cargo-zigbuild's
/// way of saying "link against glibc 2.34".
pub const LAMBDA_TRIPLE: &str = "x86_64-unknown-linux-gnu.2.34";

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building or packaging; each message names the file or crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot parse {}: {source}", path.display())]
    Manifest {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("no function crates under {} (a function is a crate with `[package.metadata.lambda] function = true`)", dir.display())]
    NoFunctions { dir: PathBuf },
    #[error("unknown function `{name}`; available functions: {}", available.join(", "))]
    UnknownFunction {
        name: String,
        available: Vec<String>,
    },
    #[error("{} is not an elf binary lambda can run: {reason}", path.display())]
    NotElf { path: PathBuf, reason: String },
    #[error("{} is built for {found}, but the functions are deployed as x86_64", path.display())]
    WrongMachine { path: PathBuf, found: String },
    #[error(
        "{} requires GLIBC_{}.{}, newer than the GLIBC_{}.{} of lambda's provided.al2023: it would \
         fail to start with \"GLIBC_{}.{} not found\" (build for lambda with cargo zigbuild \
         --target {LAMBDA_TRIPLE})",
        path.display(), found.0, found.1, limit.0, limit.1, found.0, found.1
    )]
    GlibcTooNew {
        path: PathBuf,
        found: (u32, u32),
        limit: (u32, u32),
    },
    #[error("failed to zip {}: {source}", path.display())]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("failed to run {what}: {source}")]
    Spawn { what: String, source: io::Error },
    #[error("{what} failed ({status})")]
    CommandFailed { what: String, status: ExitStatus },
    #[error("cargo reported no `{crate_name}` executable for crate {crate_name}")]
    NoExecutable { crate_name: String },
    #[error(
        "{} marks a lambda function but has no [[bin]] named `{name}` (the binary is named after the function)",
        manifest.display()
    )]
    NoFunctionBinary { manifest: PathBuf, name: String },
    #[error("python3 is not on PATH; it is needed to install ziglang and cargo-zigbuild")]
    PythonMissing,
    #[error("{tool} not found: {hint}")]
    ToolMissing { tool: String, hint: String },
    /// Any of the above while handling one function, with the function's name in front.
    #[error("function {function}: {source}")]
    Function {
        function: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The error itself, without the [`Error::Function`] wrapper.
    pub fn root(&self) -> &Error {
        match self {
            Error::Function { source, .. } => source.root(),
            other => other,
        }
    }
}

/// rustc flags of Lambda builds only, passed as a `--config` override for the Lambda target
/// (so build scripts, proc macros and every host build are untouched): a non-PIE executable.
/// A position-independent one carries a dynamic relocation for every pointer in its data
/// (vtables, string tables, the SDK's static metadata), 24 bytes each, applied by the loader
/// at every cold start; at a fixed address there are none. The cost is ASLR of the binary's
/// own image (libraries, stack and heap stay randomised) in a single-tenant Lambda sandbox.
pub const LAMBDA_RUSTFLAGS: &[&str] = &["-Crelocation-model=static"];

/// The feature a function crate may declare for Lambda builds (`[features] lambda = [...]`);
/// the functions use it for compile-time log filtering, which must not reach the host build.
pub const LAMBDA_FEATURE: &str = "lambda";

/// The cargo profile of [`Target::Host`] builds: xtask's own, so they share its dependencies.
pub const HOST_PROFILE: &str = "dev";
/// The cargo profile of [`Target::Lambda`] builds.
pub const LAMBDA_PROFILE: &str = "release";

/// A crate under `functions/` that builds a Lambda function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCrate {
    /// Package name, e.g. `insert-invoice`; also the function's name in the stack and the name
    /// of its binary.
    pub name: String,
    pub dir: PathBuf,
    /// Whether the crate declares the [`LAMBDA_FEATURE`] feature.
    pub lambda_feature: bool,
}

/// What the binaries are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Lambda `provided.al2023` x86_64: `cargo zigbuild --release --target` [`LAMBDA_TRIPLE`],
    /// checked against glibc 2.34.
    Lambda,
    /// A plain host `cargo build` (dev profile), run by the local environment's Lambda
    /// runtime; shares xtask's compiled dependencies.
    Host,
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Lambda => "lambda",
            Target::Host => "host",
        }
    }
}

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub workspace_root: PathBuf,
    pub target: Target,
    /// `--function NAME` (repeatable); `None` builds every function.
    pub only: Option<Vec<String>>,
    /// Where `<name>.zip` and its `<name>.zip.json` record go.
    pub out_dir: PathBuf,
    /// The project venv holding `cargo-zigbuild` and `ziglang` (`<root>/.xtask/venv`).
    pub venv_dir: PathBuf,
    /// Packages selected with the functions in a host build (never built themselves) so that
    /// cargo unifies features as in their own build: `["xtask"]` when the workspace has one.
    pub host_share_with: Vec<String>,
}

impl BuildOptions {
    /// Defaults: every function, zips in `target/lambda` (Lambda) or `target/lambda-host`
    /// (Host, kept apart so switching targets never mixes artifacts), venv in `.xtask/venv`.
    pub fn new(workspace_root: impl Into<PathBuf>, target: Target) -> Self {
        let workspace_root = workspace_root.into();
        let out_dir = workspace_root.join("target").join(match target {
            Target::Lambda => "lambda",
            Target::Host => "lambda-host",
        });
        let venv_dir = workspace_root.join(".xtask").join("venv");
        let host_share_with = if workspace_root.join("xtask").join("Cargo.toml").is_file() {
            vec!["xtask".to_owned()]
        } else {
            Vec::new()
        };
        BuildOptions {
            workspace_root,
            target,
            only: None,
            out_dir,
            venv_dir,
            host_share_with,
        }
    }
}

/// A packaged function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub function: String,
    pub zip_path: PathBuf,
    /// SHA-256 of the zip, lowercase hex (content-addressed artifact keys).
    pub sha256_hex: String,
    /// SHA-256 of the zip, base64 of the raw digest: what Lambda reports as `CodeSha256`.
    pub code_sha256_b64: String,
    /// Zip size in bytes.
    pub size: u64,
    /// Whether the zip was (re)written in this run; false when the binary was unchanged.
    pub rebuilt: bool,
    /// Whether cargo compiled the binary in this run (false: cargo found it fresh).
    pub compiled: bool,
    /// Size of the function's binary (zipped as `bootstrap`) in bytes.
    pub binary_size: u64,
    /// Highest `GLIBC_x.y` the binary requires.
    pub glibc: Option<(u32, u32)>,
}

impl fmt::Display for Artifact {
    /// One summary line: `insert-invoice: bin 5.1 MiB, zip 2.0 MiB, glibc 2.34, sha256 1a2b3c4d5e6f (repackaged)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let glibc = glibc_label(self.glibc);
        write!(
            f,
            "{}: bin {}, zip {}, glibc {}, sha256 {} ({})",
            self.function,
            human_size(self.binary_size),
            human_size(self.size),
            glibc,
            &self.sha256_hex[..12.min(self.sha256_hex.len())],
            if self.rebuilt {
                "repackaged"
            } else {
                "unchanged"
            }
        )
    }
}

impl Report {
    /// The build table: one row per function (binary and zip size, glibc ceiling, what was
    /// redone), then the total time.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<18} {:>10} {:>10} {:>6}  {:<9} {}\n",
            "function", "binary", "zip", "glibc", "cargo", "zip file"
        );
        for a in &self.artifacts {
            out.push_str(&format!(
                "{:<18} {:>10} {:>10} {:>6}  {:<9} {}\n",
                a.function,
                mib(a.binary_size),
                mib(a.size),
                glibc_label(a.glibc),
                if a.compiled { "compiled" } else { "fresh" },
                if a.rebuilt { "repackaged" } else { "unchanged" },
            ));
        }
        out.push_str(&format!(
            "{} build ({} profile{}): {} function{} in {:.1} s (cargo {:.1} s)\n",
            self.target.label(),
            self.profile,
            match self.target {
                Target::Lambda => format!(", {LAMBDA_TRIPLE}"),
                Target::Host => String::new(),
            },
            self.artifacts.len(),
            if self.artifacts.len() == 1 { "" } else { "s" },
            self.total_secs,
            self.compile_secs,
        ));
        out
    }

    /// The same as [`Report::table`], as one JSON document (sizes in bytes).
    pub fn to_json(&self) -> serde_json::Value {
        let functions: Vec<_> = self
            .artifacts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "function": a.function,
                    "binary_bytes": a.binary_size,
                    "zip_bytes": a.size,
                    "glibc": a.glibc.map(|(major, minor)| format!("{major}.{minor}")),
                    "zip": a.zip_path,
                    "sha256": a.sha256_hex,
                    "code_sha256": a.code_sha256_b64,
                    "compiled": a.compiled,
                    "repackaged": a.rebuilt,
                })
            })
            .collect();
        serde_json::json!({
            "target": self.target.label(),
            "profile": self.profile,
            "triple": match self.target {
                Target::Lambda => Some(LAMBDA_TRIPLE),
                Target::Host => None,
            },
            "functions": functions,
            "compile_secs": round1(self.compile_secs),
            "total_secs": round1(self.total_secs),
        })
    }
}

fn glibc_label(glibc: Option<(u32, u32)>) -> String {
    match glibc {
        Some((major, minor)) => format!("{major}.{minor}"),
        None => "none".into(),
    }
}

/// Sizes in the table: MiB with two decimals, precise enough to compare builds.
fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / f64::from(1 << 20))
}

fn round1(secs: f64) -> f64 {
    (secs * 10.0).round() / 10.0
}

/// Every function crate directly under `<workspace_root>/functions`, sorted by name.
pub fn discover(workspace_root: &Path) -> Result<Vec<FunctionCrate>> {
    let functions = workspace_root.join("functions");
    let entries = std::fs::read_dir(&functions).map_err(|source| Error::Io {
        action: "list",
        path: functions.clone(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            action: "list",
            path: functions.clone(),
            source,
        })?;
        let manifest = entry.path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest).map_err(|source| Error::Io {
            action: "read",
            path: manifest.clone(),
            source,
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|source| Error::Manifest {
            path: manifest.clone(),
            source,
        })?;
        let Some(name) = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            continue; // a virtual manifest: not a crate
        };
        let is_function = table
            .get("package")
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("lambda"))
            .and_then(|l| l.get("function"))
            .and_then(|f| f.as_bool())
            .unwrap_or(false);
        if !is_function {
            continue; // a library, or a binary that is not a function
        }
        let has_binary = table
            .get("bin")
            .and_then(|b| b.as_array())
            .is_some_and(|bins| {
                bins.iter()
                    .any(|bin| bin.get("name").and_then(|n| n.as_str()) == Some(name))
            });
        if !has_binary {
            return Err(Error::NoFunctionBinary {
                manifest,
                name: name.to_owned(),
            });
        }
        let lambda_feature = table
            .get("features")
            .and_then(|f| f.get(LAMBDA_FEATURE))
            .is_some();
        found.push(FunctionCrate {
            name: name.to_owned(),
            dir: entry.path(),
            lambda_feature,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// What [`build`] did: the artifacts, in discovery order, and where the time went.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: Target,
    /// The cargo profile the binaries were built with.
    pub profile: &'static str,
    pub artifacts: Vec<Artifact>,
    /// Seconds in cargo (compiling and linking every selected function).
    pub compile_secs: f64,
    /// Seconds in total: tools, cargo, ELF checks and packaging.
    pub total_secs: f64,
}

/// Builds the selected functions with one cargo invocation and packages each.
pub fn build(opts: &BuildOptions) -> Result<Report> {
    let started = Instant::now();
    let all = discover(&opts.workspace_root)?;
    if all.is_empty() {
        return Err(Error::NoFunctions {
            dir: opts.workspace_root.join("functions"),
        });
    }
    let selected = select(&all, opts.only.as_deref())?;
    let env = match opts.target {
        Target::Lambda => {
            ensure_zigbuild(&opts.venv_dir)?;
            zig_env(&opts.venv_dir)
        }
        Target::Host => Vec::new(),
    };
    std::fs::create_dir_all(&opts.out_dir).map_err(|source| Error::Io {
        action: "create",
        path: opts.out_dir.clone(),
        source,
    })?;

    let compile_started = Instant::now();
    let mut executables = compile(opts, &selected, &env)?;
    let compile_secs = compile_started.elapsed().as_secs_f64();

    let mut jobs = Vec::with_capacity(selected.len());
    for function in selected {
        let (exe, fresh) = executables
            .remove(&function.name)
            .ok_or_else(|| Error::Function {
                function: function.name.clone(),
                source: Box::new(Error::NoExecutable {
                    crate_name: function.name.clone(),
                }),
            })?;
        jobs.push((function, exe, fresh));
    }
    // Zipping and hashing take a core each (170 MB of debug binaries for a host build): one
    // thread per function, results in discovery order.
    let artifacts = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(function, exe, fresh)| {
                scope.spawn(move || {
                    package_one(opts, &function.name, exe, !fresh).map_err(|source| {
                        Error::Function {
                            function: function.name.clone(),
                            source: Box::new(source),
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a packaging thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(Report {
        target: opts.target,
        profile: match opts.target {
            Target::Lambda => LAMBDA_PROFILE,
            Target::Host => HOST_PROFILE,
        },
        artifacts,
        compile_secs,
        total_secs: started.elapsed().as_secs_f64(),
    })
}

/// The functions named in `only` (all of them for `None`), in discovery order.
fn select<'a>(all: &'a [FunctionCrate], only: Option<&[String]>) -> Result<Vec<&'a FunctionCrate>> {
    let Some(only) = only else {
        return Ok(all.iter().collect());
    };
    let wanted: BTreeSet<&str> = only.iter().map(String::as_str).collect();
    if let Some(unknown) = wanted.iter().find(|w| !all.iter().any(|f| f.name == **w)) {
        return Err(Error::UnknownFunction {
            name: (*unknown).to_owned(),
            available: all.iter().map(|f| f.name.clone()).collect(),
        });
    }
    Ok(all
        .iter()
        .filter(|f| wanted.contains(f.name.as_str()))
        .collect())
}

/// The cargo arguments that build `functions` for `opts.target`.
pub fn cargo_args(opts: &BuildOptions, functions: &[&FunctionCrate]) -> Vec<String> {
    let mut args: Vec<String> = match opts.target {
        Target::Lambda => ["zigbuild", "--target", LAMBDA_TRIPLE, "--release"]
            .map(String::from)
            .to_vec(),
        Target::Host => vec!["build".into()],
    };
    for f in functions {
        args.extend(["-p".into(), f.name.clone()]);
    }
    if opts.target == Target::Host {
        // Selected for feature resolution only: the `--bin` filters below build none of its
        // targets.
        for package in &opts.host_share_with {
            args.extend(["-p".into(), package.clone()]);
        }
    }
    for f in functions {
        args.extend(["--bin".into(), f.name.clone()]);
    }
    if opts.target == Target::Lambda {
        let flags: Vec<String> = LAMBDA_RUSTFLAGS.iter().map(|f| format!("{f:?}")).collect();
        args.push("--config".into());
        args.push(format!(
            "target.{}.rustflags=[{}]",
            lambda_cargo_triple(),
            flags.join(", ")
        ));
        let features: Vec<String> = functions
            .iter()
            .filter(|f| f.lambda_feature)
            .map(|f| format!("{}/{LAMBDA_FEATURE}", f.name))
            .collect();
        if !features.is_empty() {
            args.extend(["--features".into(), features.join(",")]);
        }
    }
    // Machine-readable artifact paths on stdout; cargo's progress and rendered diagnostics
    // still go to our stderr.
    args.push("--message-format=json-render-diagnostics".into());
    args
}

/// The triple cargo itself sees: cargo-zigbuild strips the glibc suffix of
/// [`LAMBDA_TRIPLE`] before running cargo.
fn lambda_cargo_triple() -> &'static str {
    LAMBDA_TRIPLE
        .split_once('.')
        .map_or(LAMBDA_TRIPLE, |(triple, _)| triple)
}

/// Runs cargo once for all `functions`; returns each function's executable and whether cargo
/// found it fresh.
fn compile(
    opts: &BuildOptions,
    functions: &[&FunctionCrate],
    env: &[(OsString, OsString)],
) -> Result<BTreeMap<String, (PathBuf, bool)>> {
    // `CARGO` is set when running under cargo (`cargo xtask`, `cargo test`): use the same
    // toolchain that built us.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = cargo_args(opts, functions);
    let mut cmd = Command::new(&cargo);
    for name in crate_env(std::env::vars_os().map(|(k, _)| k)) {
        cmd.env_remove(name);
    }
    cmd.args(&args)
        .current_dir(&opts.workspace_root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = format!(
        "cargo {}",
        args.iter()
            .filter(|a| !a.starts_with("--message-format"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: what.clone(),
        source,
    })?;
    let names: BTreeSet<&str> = functions.iter().map(|f| f.name.as_str()).collect();
    let mut found = BTreeMap::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|source| Error::Spawn {
            what: what.clone(),
            source,
        })?;
        if let Some((name, exe, fresh)) = bin_artifact(&line)
            && names.contains(name.as_str())
        {
            found.insert(name, (exe, fresh));
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        what: what.clone(),
        source,
    })?;
    if !status.success() {
        return Err(Error::CommandFailed { what, status });
    }
    Ok(found)
}

/// The variables cargo sets for the crate it runs (`cargo xtask` runs xtask, `cargo test` a
/// test binary), among `names`. They must not reach the nested cargo: build scripts such as
/// ring's declare `rerun-if-env-changed=CARGO_MANIFEST_DIR` (and `CARGO_PKG_NAME`, ...),
/// which cargo checks against its own environment. Inherited, they made every host build
/// rebuild ring and all above it (rustls, the HTTPS client, invoice-core), and the next
/// `cargo xtask` rebuild them back: ~20 s each way. What a user sets (`CARGO_HOME`,
/// `CARGO_TARGET_DIR`, `CARGO_TERM_COLOR`, ...) is kept.
fn crate_env(names: impl Iterator<Item = OsString>) -> Vec<OsString> {
    const SET_FOR_A_CRATE: &[&str] = &[
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    names
        .filter(|name| {
            name.to_str().is_some_and(|n| {
                SET_FOR_A_CRATE.contains(&n)
                    || n.starts_with("CARGO_PKG_")
                    || n.starts_with("CARGO_BIN_EXE_")
            })
        })
        .collect()
}

/// `(binary name, executable, fresh)` from a cargo JSON message about a binary.
fn bin_artifact(line: &str) -> Option<(String, PathBuf, bool)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let name = msg.get("target")?.get("name")?.as_str()?;
    let exe = msg.get("executable")?.as_str()?;
    let fresh = msg.get("fresh").and_then(|f| f.as_bool()).unwrap_or(false);
    Some((name.to_owned(), PathBuf::from(exe), fresh))
}

/// What `<name>.zip.json` records about the zip beside it.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Record {
    function: String,
    target: String,
    binary_sha256: String,
    binary_size: u64,
    zip_sha256: String,
    glibc: Option<(u32, u32)>,
}

/// Checks the binary at `exe` and zips it to `<out_dir>/<name>.zip` unless the zip there
/// already holds exactly this binary.
pub fn package_one(
    opts: &BuildOptions,
    name: &str,
    exe: &Path,
    compiled: bool,
) -> Result<Artifact> {
    let binary = std::fs::read(exe).map_err(|source| Error::Io {
        action: "read",
        path: exe.to_path_buf(),
        source,
    })?;
    let info = inspect(exe, &binary)?;
    match opts.target {
        Target::Lambda => check_lambda(exe, &info)?,
        Target::Host => check_machine(exe, &info)?,
    }
    let (binary_sha256, _) = sha256_hex_and_b64(&binary);
    let zip_path = opts.out_dir.join(format!("{name}.zip"));
    let record_path = opts.out_dir.join(format!("{name}.zip.json"));
    let artifact = |zip: &[u8], rebuilt| {
        let (sha256_hex, code_sha256_b64) = sha256_hex_and_b64(zip);
        Artifact {
            function: name.to_owned(),
            zip_path: zip_path.clone(),
            sha256_hex,
            code_sha256_b64,
            size: zip.len() as u64,
            rebuilt,
            compiled,
            binary_size: binary.len() as u64,
            glibc: info.glibc,
        }
    };

    // Reuse the zip only if the record says it holds this binary and the zip is still the
    // one recorded (a hand-edited or truncated zip is rewritten, not trusted).
    let recorded: Option<Record> = std::fs::read(&record_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(record) = recorded
        && record.binary_sha256 == binary_sha256
        && record.target == opts.target.label()
        && let Ok(zip) = std::fs::read(&zip_path)
    {
        let existing = artifact(&zip, false);
        if existing.sha256_hex == record.zip_sha256 {
            return Ok(existing);
        }
    }

    let zip = zip_bootstrap(exe, &binary)?;
    let fresh = artifact(&zip, true);
    write_atomically(&zip_path, &zip)?;
    let record = Record {
        function: name.to_owned(),
        target: opts.target.label().to_owned(),
        binary_sha256,
        binary_size: binary.len() as u64,
        zip_sha256: fresh.sha256_hex.clone(),
        glibc: info.glibc,
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record always serialises");
    // Written after the zip: a crash in between leaves a stale record, which only causes a
    // repackage next time, never a zip trusted for the wrong binary.
    write_atomically(&record_path, &json)?;
    Ok(fresh)
}

/// Writes via a temporary file and a rename, so a reader never sees half a zip.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        action: "rename",
        path: path.to_path_buf(),
        source,
    })
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_nested_cargo_loses_what_cargo_set_for_the_running_crate_only() {
        let names = [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_BIN_EXE_xtask",
            "OUT_DIR",
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_TERM_COLOR",
            "PATH",
        ]
        .map(OsString::from);
        let removed = crate_env(names.into_iter());
        assert_eq!(
            removed,
            [
                "CARGO_MANIFEST_DIR",
                "CARGO_PKG_NAME",
                "CARGO_PKG_VERSION_MAJOR",
                "CARGO_BIN_EXE_xtask",
                "OUT_DIR"
            ]
            .map(OsString::from)
        );
    }

    use super::*;

    fn crates(names: &[&str]) -> Vec<FunctionCrate> {
        names
            .iter()
            .map(|n| FunctionCrate {
                name: (*n).into(),
                dir: PathBuf::from(n),
                lambda_feature: false,
            })
            .collect()
    }

    #[test]
    fn select_keeps_discovery_order_and_rejects_unknown_names() {
        let all = crates(&["a", "b", "c"]);
        let only = vec!["c".to_owned(), "a".to_owned()];
        let picked: Vec<_> = select(&all, Some(&only))
            .unwrap()
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(picked, ["a", "c"]);

        let err = select(&all, Some(&["nope".to_owned()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown function `nope`; available functions: a, b, c"
        );
    }

    #[test]
    fn reads_binary_artifacts_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"list-invoices"},"executable":"/t/release/list-invoices","fresh":true}"#;
        assert_eq!(
            bin_artifact(line),
            Some((
                "list-invoices".into(),
                PathBuf::from("/t/release/list-invoices"),
                true
            ))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"invoice_core"},"executable":null,"fresh":false}"#;
        assert_eq!(bin_artifact(lib), None);
        assert_eq!(bin_artifact("not json"), None);
    }

    #[test]
    fn one_cargo_invocation_names_every_function_binary() {
        let mut all = crates(&["a", "b"]);
        all[1].lambda_feature = true;
        let selected: Vec<_> = all.iter().collect();
        let mut opts = BuildOptions::new("/nowhere", Target::Lambda);
        opts.host_share_with = vec!["xtask".into()];
        assert_eq!(
            cargo_args(&opts, &selected).join(" "),
            "zigbuild --target x86_64-unknown-linux-gnu.2.34 --release -p a -p b --bin a --bin b \
             --config target.x86_64-unknown-linux-gnu.rustflags=[\"-Crelocation-model=static\"] \
             --features b/lambda --message-format=json-render-diagnostics"
        );
        // Neither the Lambda-only rustflags nor the `lambda` features reach a host build.
        opts.target = Target::Host;
        assert_eq!(
            cargo_args(&opts, &selected[1..]).join(" "),
            "build -p b -p xtask --bin b --message-format=json-render-diagnostics"
        );
    }

    #[test]
    fn table_has_a_row_per_function_and_the_total_time() {
        let artifact = |function: &str, binary_size, size, compiled| Artifact {
            function: function.into(),
            zip_path: format!("out/{function}.zip").into(),
            sha256_hex: "00".repeat(32),
            code_sha256_b64: String::new(),
            size,
            rebuilt: compiled,
            compiled,
            binary_size,
            glibc: Some((2, 34)),
        };
        let report = Report {
            target: Target::Lambda,
            profile: LAMBDA_PROFILE,
            artifacts: vec![
                artifact("generate-pdf", 7 << 20, 3 << 19, true),
                artifact("list-invoices", 4 << 20, 1 << 20, false),
            ],
            compile_secs: 61.04,
            total_secs: 62.46,
        };
        let table = report.table();
        let lines: Vec<_> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "generate-pdf",
                "7.00",
                "MiB",
                "1.50",
                "MiB",
                "2.34",
                "compiled",
                "repackaged"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "list-invoices",
                "4.00",
                "MiB",
                "1.00",
                "MiB",
                "2.34",
                "fresh",
                "unchanged"
            ]
        );
        assert_eq!(
            lines[3],
            "lambda build (release profile, x86_64-unknown-linux-gnu.2.34): 2 functions in 62.5 s (cargo 61.0 s)"
        );
        let json = report.to_json();
        assert_eq!(json["functions"][0]["zip_bytes"], 3 << 19);
        assert_eq!(json["functions"][1]["binary_bytes"], 4 << 20);
        assert_eq!(json["functions"][1]["glibc"], "2.34");
        assert_eq!(json["functions"][1]["compiled"], false);
        assert_eq!(json["total_secs"], 62.5);
        assert_eq!(json["profile"], "release");
    }

    #[test]
    fn summary_line_names_sizes_and_glibc() {
        let a = Artifact {
            function: "insert-invoice".into(),
            zip_path: "x.zip".into(),
            sha256_hex: "0123456789abcdef".into(),
            code_sha256_b64: String::new(),
            size: 2 << 20,
            rebuilt: false,
            compiled: false,
            binary_size: 5 << 20,
            glibc: Some((2, 34)),
        };
        assert_eq!(
            a.to_string(),
            "insert-invoice: bin 5.0 MiB, zip 2.0 MiB, glibc 2.34, sha256 0123456789ab (unchanged)"
        );
    }
}
