//! `cargo xtask build`: compile the Lambda functions and package each as a reproducible zip.
//!
//! A function is any crate directly under `functions/` with a `[[bin]]` named `bootstrap`
//! (the name `provided.al2023` executes); library crates such as `invoice-core` are skipped,
//! and nobody keeps a list by hand. For Lambda the binaries are cross-linked with
//! `cargo zigbuild --target x86_64-unknown-linux-gnu.2.34` so they run on the runtime's glibc
//! 2.34 whatever the build machine has ([`zigbuild`]); every binary's ELF is checked
//! ([`elf`]) before it is zipped ([`package`]).
//!
//! Incremental at both levels: cargo skips compiling what is fresh, and a zip is rewritten only
//! when the binary's SHA-256 differs from the one recorded beside it
//! (`<out_dir>/<name>.zip.json`), so an unchanged tree rebuilds and repackages nothing and the
//! deployer sees the same `CodeSha256` as last time.
//!
//! Each function is compiled by its own cargo invocation: every function's binary is called
//! `bootstrap`, so one invocation for all of them would make cargo write them all to the same
//! `target/.../release/bootstrap` (an "output filename collision"). One at a time, each is read
//! right after its cargo run, before the next one overwrites it.

mod elf;
mod package;
mod zigbuild;

use std::collections::BTreeSet;
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
    #[error("no function crates under {} (a function is a crate with a [[bin]] named \"bootstrap\")", dir.display())]
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
    #[error("cargo reported no `bootstrap` executable for crate {crate_name}")]
    NoExecutable { crate_name: String },
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

/// The cargo profile of [`Target::Host`] builds.
pub const HOST_PROFILE: &str = "local-lambda";

/// A crate under `functions/` that builds a Lambda `bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCrate {
    /// Package name, e.g. `insert-invoice`; also the function's name in the stack.
    pub name: String,
    pub dir: PathBuf,
}

/// What the binaries are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Lambda `provided.al2023` x86_64: `cargo zigbuild --release --target` [`LAMBDA_TRIPLE`],
    /// checked against glibc 2.34.
    Lambda,
    /// A plain host `cargo build --profile local-lambda`: enough for the local emulator, which stores the
    /// code but never runs it.
    Host,
}

impl Target {
    fn label(self) -> &'static str {
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
        BuildOptions {
            workspace_root,
            target,
            only: None,
            out_dir,
            venv_dir,
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
    /// Size of the `bootstrap` binary in bytes.
    pub binary_size: u64,
    /// Highest `GLIBC_x.y` the binary requires.
    pub glibc: Option<(u32, u32)>,
}

impl fmt::Display for Artifact {
    /// One summary line: `insert-invoice: bin 5.1 MiB, zip 2.0 MiB, glibc 2.34, sha256 1a2b3c4d5e6f (repackaged)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let glibc = match self.glibc {
            Some((major, minor)) => format!("{major}.{minor}"),
            None => "none".into(),
        };
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
        let has_bootstrap = table
            .get("bin")
            .and_then(|b| b.as_array())
            .is_some_and(|bins| {
                bins.iter()
                    .any(|bin| bin.get("name").and_then(|n| n.as_str()) == Some(ENTRY_NAME))
            });
        if has_bootstrap {
            found.push(FunctionCrate {
                name: name.to_owned(),
                dir: entry.path(),
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Builds and packages the selected functions; one progress line per function on stderr.
pub fn build(opts: &BuildOptions) -> Result<Vec<Artifact>> {
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

    let mut artifacts = Vec::with_capacity(selected.len());
    for function in selected {
        let started = Instant::now();
        let in_function = |source| Error::Function {
            function: function.name.clone(),
            source: Box::new(source),
        };
        let (exe, fresh) = compile(opts, function, &env).map_err(in_function)?;
        let artifact = package_one(opts, &function.name, &exe, !fresh).map_err(in_function)?;
        eprintln!(
            "build: {artifact} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        artifacts.push(artifact);
    }
    Ok(artifacts)
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

/// Runs cargo for one function; returns the `bootstrap` path and whether cargo found it fresh.
fn compile(
    opts: &BuildOptions,
    function: &FunctionCrate,
    env: &[(OsString, OsString)],
) -> Result<(PathBuf, bool)> {
    // `CARGO` is set when running under cargo (`cargo xtask`, `cargo test`): use the same
    // toolchain that built us.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    match opts.target {
        Target::Lambda => cmd.args(["zigbuild", "--target", LAMBDA_TRIPLE, "--release"]),
        // The emulator stores host builds and local runs execute them: a lighter profile
        // (see the workspace Cargo.toml) compiles in a fraction of the release time.
        Target::Host => cmd.args(["build", "--profile", HOST_PROFILE]),
    };
    cmd.args(["-p", &function.name, "--bin", ENTRY_NAME])
        // Machine-readable artifact paths on stdout; cargo's progress and rendered
        // diagnostics still go to our stderr.
        .arg("--message-format=json-render-diagnostics")
        .current_dir(&opts.workspace_root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let what = format!(
        "cargo {} -p {}",
        match opts.target {
            Target::Lambda => "zigbuild",
            Target::Host => "build",
        },
        function.name
    );
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        what: what.clone(),
        source,
    })?;
    let mut artifact = None;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|source| Error::Spawn {
            what: what.clone(),
            source,
        })?;
        if let Some(found) = bootstrap_artifact(&line) {
            artifact = Some(found);
        }
    }
    let status = child.wait().map_err(|source| Error::Spawn {
        what: what.clone(),
        source,
    })?;
    if !status.success() {
        return Err(Error::CommandFailed { what, status });
    }
    artifact.ok_or_else(|| Error::NoExecutable {
        crate_name: function.name.clone(),
    })
}

/// `(executable, fresh)` from a cargo JSON message about a `bootstrap` binary.
fn bootstrap_artifact(line: &str) -> Option<(PathBuf, bool)> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact"
        || msg.get("target")?.get("name")?.as_str()? != ENTRY_NAME
    {
        return None;
    }
    let exe = msg.get("executable")?.as_str()?;
    let fresh = msg.get("fresh").and_then(|f| f.as_bool()).unwrap_or(false);
    Some((PathBuf::from(exe), fresh))
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
    use super::*;

    fn crates(names: &[&str]) -> Vec<FunctionCrate> {
        names
            .iter()
            .map(|n| FunctionCrate {
                name: (*n).into(),
                dir: PathBuf::from(n),
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
    fn reads_bootstrap_artifacts_from_cargo_json() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"bootstrap"},"executable":"/t/release/bootstrap","fresh":true}"#;
        assert_eq!(
            bootstrap_artifact(line),
            Some((PathBuf::from("/t/release/bootstrap"), true))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"invoice_core"},"executable":null,"fresh":false}"#;
        assert_eq!(bootstrap_artifact(lib), None);
        assert_eq!(bootstrap_artifact("not json"), None);
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
