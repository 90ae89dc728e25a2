//! Tests of `xtask::build`: ELF checks on checked-in binaries, zip reproducibility, discovery
//! on a fixture workspace, end-to-end host and Lambda builds of that workspace, and the feature
//! unification that lets the functions' host build reuse xtask's compiled dependencies.
//!
//! The Lambda (cargo-zigbuild) end-to-end test installs cargo-zigbuild and ziglang from PyPI
//! into `<repo>/.xtask/venv` when they are missing, as `cargo xtask build` does (~15 s once),
//! and fails if that is impossible: it is never skipped, nor is the test that compiles C with
//! the host's `cc` (`.ci/run` installs all three). The fixture's two binaries have no
//! dependencies, so the build itself takes seconds; the real functions' release build is
//! measured by `cargo xtask build --env dev`, not by a test.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use xtask::build::{
    self, Artifact, BuildOptions, Error, FunctionCrate, Target, check_lambda, glibc_ceiling,
    inspect,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn elf_fixture(name: &str) -> PathBuf {
    fixtures().join("elf").join(name)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Options for packaging binaries directly (no cargo), writing into `out_dir`.
fn options(out_dir: &Path, target: Target) -> BuildOptions {
    BuildOptions {
        out_dir: out_dir.to_path_buf(),
        ..BuildOptions::new(out_dir, target)
    }
}

fn unzip(zip_path: &Path) -> (String, Option<u32>, Vec<u8>, usize) {
    let bytes = fs::read(zip_path).unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let len = archive.len();
    let mut entry = archive.by_index(0).unwrap();
    let mut content = Vec::new();
    entry.read_to_end(&mut content).unwrap();
    (
        entry.name().unwrap().into_owned(),
        entry.unix_mode(),
        content,
        len,
    )
}

// ---------------------------------------------------------------------------------- ELF

#[test]
fn reads_the_glibc_ceiling_of_fixture_binaries() {
    let ceiling = |name| glibc_ceiling(&fs::read(elf_fixture(name)).unwrap()).unwrap();
    assert_eq!(ceiling("x86_64-glibc-2.36.elf"), Some((2, 36)));
    assert_eq!(ceiling("x86_64-glibc-2.34.elf"), Some((2, 34)));
    assert_eq!(ceiling("aarch64-glibc-2.17.elf"), Some((2, 17)));
}

#[test]
fn reads_the_glibc_ceiling_of_a_binary_compiled_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("newer");
    // A missing compiler fails the test rather than skipping it: a test that passes without
    // running proves nothing (.ci/run installs cc; newer.c needs glibc 2.36 for arc4random).
    let compiled = std::process::Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(elf_fixture("newer.c"))
        .status()
        .expect("running cc, the host C compiler (install gcc)");
    assert!(
        compiled.success(),
        "cc could not compile newer.c: the host needs glibc >= 2.36 (arc4random)"
    );
    let info = inspect(&exe, &fs::read(&exe).unwrap()).unwrap();
    assert_eq!(info.machine, "x86_64");
    assert!(info.glibc >= Some((2, 36)), "{info:?}");
    let err = check_lambda(&exe, &info).unwrap_err().to_string();
    assert!(err.contains(&exe.display().to_string()), "{err}");
}

#[test]
fn lambda_packaging_refuses_a_binary_needing_newer_glibc() {
    let out = tempfile::tempdir().unwrap();
    let exe = elf_fixture("x86_64-glibc-2.36.elf");
    let err =
        build::package_one(&options(out.path(), Target::Lambda), "f", &exe, true).unwrap_err();
    assert!(matches!(
        err,
        Error::GlibcTooNew {
            found: (2, 36),
            limit: (2, 34),
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("x86_64-glibc-2.36.elf"), "{msg}");
    assert!(
        msg.contains("GLIBC_2.36") && msg.contains("GLIBC_2.34"),
        "{msg}"
    );
    assert!(!out.path().join("f.zip").exists(), "nothing is packaged");

    // The same binary is fine for the local emulator, which never runs it.
    let host = build::package_one(&options(out.path(), Target::Host), "f", &exe, true).unwrap();
    assert_eq!(host.glibc, Some((2, 36)));
}

#[test]
fn a_fake_binary_is_rejected_with_a_clear_error() {
    let out = tempfile::tempdir().unwrap();
    let fake = elf_fixture("not-elf.sh");
    let err = build::package_one(&options(out.path(), Target::Host), "f", &fake, true).unwrap_err();
    assert!(matches!(err, Error::NotElf { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("not-elf.sh") && msg.contains("not an elf binary"),
        "{msg}"
    );
    assert!(glibc_ceiling(b"").is_err());
}

#[test]
fn a_binary_for_another_machine_is_rejected() {
    let out = tempfile::tempdir().unwrap();
    let exe = elf_fixture("aarch64-glibc-2.17.elf");
    let err =
        build::package_one(&options(out.path(), Target::Lambda), "f", &exe, true).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::WrongMachine { .. }), "{msg}");
    assert!(msg.contains("aarch64") && msg.contains("x86_64"), "{msg}");
}

// ---------------------------------------------------------------------------------- zips

#[test]
fn the_same_binary_gives_the_same_zip_in_different_directories() {
    let binary = fs::read(elf_fixture("x86_64-glibc-2.34.elf")).unwrap();
    let mut artifacts: Vec<Artifact> = Vec::new();
    let mut dirs = Vec::new(); // kept alive until the zips are compared
    for (i, (mode, age)) in [(0o755, 0u64), (0o700, 86_400 * 400)]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        // Different file names, permissions and mtimes: none may reach the zip.
        let exe = dir.path().join(format!("copy-{i}"));
        fs::write(&exe, &binary).unwrap();
        let file = fs::File::options().write(true).open(&exe).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age))
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&exe, fs::Permissions::from_mode(mode)).unwrap();

        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let artifact =
            build::package_one(&options(&out, Target::Lambda), "fn", &exe, true).unwrap();
        assert!(artifact.rebuilt);
        assert_eq!(artifact.glibc, Some((2, 34)));

        let (name, mode, content, entries) = unzip(&artifact.zip_path);
        assert_eq!(entries, 1);
        assert_eq!(name, "bootstrap");
        assert_eq!(mode, Some(0o100755), "a regular file, rwxr-xr-x");
        assert_eq!(content, binary);
        artifacts.push(artifact);
        dirs.push(dir);
    }
    assert_eq!(artifacts[0].sha256_hex, artifacts[1].sha256_hex);
    assert_eq!(artifacts[0].code_sha256_b64, artifacts[1].code_sha256_b64);
    assert_eq!(
        fs::read(&artifacts[0].zip_path).unwrap(),
        fs::read(&artifacts[1].zip_path).unwrap()
    );
}

#[test]
fn packaging_is_skipped_when_the_binary_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("bootstrap");
    fs::copy(elf_fixture("x86_64-glibc-2.34.elf"), &exe).unwrap();
    let opts = options(&dir.path().join("out"), Target::Lambda);
    fs::create_dir_all(&opts.out_dir).unwrap();

    let first = build::package_one(&opts, "fn", &exe, true).unwrap();
    let zip_mtime = fs::metadata(&first.zip_path).unwrap().modified().unwrap();
    let second = build::package_one(&opts, "fn", &exe, false).unwrap();
    assert!(first.rebuilt && !second.rebuilt);
    assert_eq!(first.sha256_hex, second.sha256_hex);
    assert_eq!(
        fs::metadata(&second.zip_path).unwrap().modified().unwrap(),
        zip_mtime,
        "the zip was not rewritten"
    );

    // A damaged zip is not trusted, even though the binary is unchanged.
    fs::write(&first.zip_path, b"garbage").unwrap();
    let repaired = build::package_one(&opts, "fn", &exe, false).unwrap();
    assert!(repaired.rebuilt);
    assert_eq!(repaired.sha256_hex, first.sha256_hex);

    // A different binary is repackaged.
    let mut other = fs::read(&exe).unwrap();
    other.extend_from_slice(b"trailing bytes change the hash");
    fs::write(&exe, other).unwrap();
    let changed = build::package_one(&opts, "fn", &exe, true).unwrap();
    assert!(changed.rebuilt);
    assert_ne!(changed.sha256_hex, first.sha256_hex);
}

// ---------------------------------------------------------------------------------- discovery

#[test]
fn discovers_only_crates_marked_as_functions() {
    let root = fixtures().join("workspace");
    let found = build::discover(&root).unwrap();
    assert_eq!(
        found,
        vec![
            FunctionCrate {
                name: "hello-a".into(),
                dir: root.join("functions/hello-a"),
                lambda_feature: false,
            },
            FunctionCrate {
                name: "hello-b".into(),
                dir: root.join("functions/hello-b"),
                lambda_feature: true,
            },
        ]
    );
}

#[test]
fn discovery_errors_name_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = build::discover(dir.path()).unwrap_err().to_string();
    assert!(err.contains("functions"), "{err}");

    fs::create_dir_all(dir.path().join("functions/broken")).unwrap();
    fs::write(dir.path().join("functions/broken/Cargo.toml"), "[package\n").unwrap();
    let err = build::discover(dir.path()).unwrap_err().to_string();
    assert!(err.contains("broken/Cargo.toml"), "{err}");
}

#[test]
fn a_function_without_a_binary_named_after_it_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("functions/f/Cargo.toml");
    fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    fs::copy(
        fixtures().join("function-with-bootstrap-bin.toml"),
        &manifest,
    )
    .unwrap();
    let err = build::discover(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NoFunctionBinary { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("functions/f/Cargo.toml") && msg.contains("[[bin]] named `f`"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------- end to end

/// A fresh copy of the fixture workspace (with its own target dir), so the test never
/// contends with the real workspace's cargo lock.
fn copy_workspace() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let dest = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &dest);
            } else {
                fs::copy(entry.path(), dest).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixtures().join("workspace"), dir.path());
    dir
}

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// `e_type` of a little-endian ELF: [`ET_EXEC`] for a fixed-address executable, [`ET_DYN`] for
/// a position-independent one.
fn elf_type(elf: &[u8]) -> u16 {
    u16::from_le_bytes([elf[16], elf[17]])
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn host_build_end_to_end_is_incremental() {
    let ws = copy_workspace();
    let opts = BuildOptions::new(ws.path(), Target::Host);

    let first = build::build(&opts).unwrap().artifacts;
    let names: Vec<_> = first.iter().map(|a| a.function.as_str()).collect();
    assert_eq!(names, ["hello-a", "hello-b"]);
    for artifact in &first {
        assert!(artifact.rebuilt && artifact.compiled, "{artifact}");
        assert_eq!(
            artifact.zip_path,
            opts.out_dir.join(format!("{}.zip", artifact.function))
        );
        let (name, mode, content, entries) = unzip(&artifact.zip_path);
        assert_eq!(
            (name.as_str(), mode, entries),
            ("bootstrap", Some(0o100755), 1)
        );
        // One cargo run built both: each zip must hold its own function's binary.
        assert!(contains(&content, &artifact.function), "{artifact}");
        assert_eq!(artifact.binary_size, content.len() as u64);
        // The host build is a plain one: no Lambda feature, position-independent as usual.
        assert!(
            !contains(&content, "built-with-lambda-feature"),
            "{artifact}"
        );
        assert_eq!(elf_type(&content), ET_DYN, "{artifact}");
    }
    let (_, _, hello_b, _) = unzip(&first[1].zip_path);
    assert!(contains(&hello_b, "built-without-lambda-feature"));
    assert_ne!(first[0].sha256_hex, first[1].sha256_hex);

    // Nothing changed: nothing compiled, nothing repackaged, same hashes.
    let second = build::build(&opts).unwrap().artifacts;
    for (a, b) in first.iter().zip(&second) {
        assert!(!b.rebuilt && !b.compiled, "{b}");
        assert_eq!(a.sha256_hex, b.sha256_hex);
    }

    // One function changed: only it is rebuilt.
    let main = ws.path().join("functions/hello-b/src/main.rs");
    let source = fs::read_to_string(&main).unwrap();
    fs::write(&main, source.replace("hello-b", "hello-b v2")).unwrap();
    let third = build::build(&opts).unwrap().artifacts;
    assert!(!third[0].rebuilt, "{}", third[0]);
    assert!(third[1].rebuilt, "{}", third[1]);
    assert_ne!(third[1].sha256_hex, first[1].sha256_hex);

    // --function selects; an unknown name lists what exists.
    let only_a = BuildOptions {
        only: Some(vec!["hello-a".into()]),
        ..opts.clone()
    };
    let built = build::build(&only_a).unwrap().artifacts;
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].function, "hello-a");
    let unknown = BuildOptions {
        only: Some(vec!["nope".into()]),
        ..opts
    };
    let err = build::build(&unknown).unwrap_err().to_string();
    assert_eq!(
        err,
        "unknown function `nope`; available functions: hello-a, hello-b"
    );
}

#[test]
fn lambda_build_end_to_end() {
    let ws = copy_workspace();
    let opts = BuildOptions {
        // The repository's venv, so the tools are installed once, not per test run.
        venv_dir: repo_root().join(".xtask/venv"),
        ..BuildOptions::new(ws.path(), Target::Lambda)
    };
    let report = build::build(&opts).unwrap();
    assert_eq!(report.profile, "release");
    let names: Vec<_> = report
        .artifacts
        .iter()
        .map(|a| a.function.as_str())
        .collect();
    assert_eq!(names, ["hello-a", "hello-b"]);
    for artifact in &report.artifacts {
        let ceiling = artifact.glibc.expect("a glibc binary");
        assert!(ceiling <= (2, 34), "{artifact}");
        let (name, mode, content, _) = unzip(&artifact.zip_path);
        assert_eq!((name.as_str(), mode), ("bootstrap", Some(0o100755)));
        assert!(contains(&content, &artifact.function), "{artifact}");
        assert_eq!(
            inspect(Path::new("bootstrap"), &content).unwrap().machine,
            "x86_64"
        );
        // LAMBDA_RUSTFLAGS reached the Lambda target: a fixed-address executable.
        assert_eq!(elf_type(&content), ET_EXEC, "{artifact}");
    }
    // hello-b declares a `lambda` feature, and only a Lambda build turns it on.
    let (_, _, hello_b, _) = unzip(&report.artifacts[1].zip_path);
    assert!(contains(&hello_b, "built-with-lambda-feature"));
    assert!(!contains(&hello_b, "built-without-lambda-feature"));
    let table = report.table();
    assert!(
        table.contains(
            "lambda build (release profile, x86_64-unknown-linux-gnu.2.34): 2 functions in"
        ),
        "{table}"
    );
    let again = build::build(&opts).unwrap();
    assert!(again.artifacts.iter().all(|a| !a.rebuilt && !a.compiled));
}

/// `cargo tree` of the real workspace: every package with the features cargo resolves for it
/// when building `selection` (`-p ...` and `-e ...` arguments).
fn resolved_features(selection: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(repo_root())
        .args([
            "tree", "--locked", "--prefix", "none", "--format", "{p}|{f}",
        ])
        .args(selection)
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {selection:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut packages: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((package, features)) = line.split_once('|') else {
            continue;
        };
        let package = package.trim_end_matches(" (proc-macro)").to_owned();
        packages
            .entry(package)
            .or_default()
            .insert(features.to_owned());
    }
    packages
}

/// The packages `base` and `other` both build whose features differ, described.
fn feature_drift(
    base: &BTreeMap<String, BTreeSet<String>>,
    other: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    base.iter()
        .filter_map(|(package, features)| {
            let theirs = other.get(package)?;
            (theirs != features).then(|| format!("{package}: {features:?} vs {theirs:?}"))
        })
        .collect()
}

/// `cargo xtask` compiles the SDK and everything under it once (debug). The functions' host
/// build (`cargo xtask up`, the end-to-end tests) and the test builds reuse that compile
/// only if cargo resolves exactly the same features for every shared package; one differing
/// feature (say tokio's `test-util`) recompiles the whole SDK. xtask's manifest lists what the
/// others add ("feature unification"); this fails when they drift apart.
#[test]
fn host_builds_share_xtask_s_dependencies() {
    let xtask_run = resolved_features(&["-p", "xtask", "-e", "normal,build"]);
    assert!(
        xtask_run.keys().any(|p| p.starts_with("aws-sdk-dynamodb ")),
        "{:?}",
        xtask_run.keys().collect::<Vec<_>>()
    );

    let functions = build::discover(&repo_root()).unwrap();
    let selected: Vec<_> = functions.iter().collect();
    let host_args = build::cargo_args(&BuildOptions::new(repo_root(), Target::Host), &selected);
    let mut selection: Vec<&str> = Vec::new();
    for pair in host_args.windows(2) {
        if pair[0] == "-p" {
            selection.extend(["-p", pair[1].as_str()]);
        }
    }
    assert!(selection.contains(&"xtask"), "{host_args:?}");
    selection.extend(["-e", "normal,build"]);
    let host_build = resolved_features(&selection);
    assert!(host_build.keys().any(|p| p.starts_with("lambda_runtime ")));

    // What `cargo xtask test` runs: `cargo test --workspace`; and xtask's tests alone.
    let workspace_tests = resolved_features(&["--workspace", "-e", "normal,build,dev"]);
    let xtask_tests = resolved_features(&["-p", "xtask", "-p", "stacks", "-e", "normal,build,dev"]);

    let drift = feature_drift(&xtask_run, &host_build);
    assert!(
        drift.is_empty(),
        "the functions' host build needs other features than xtask's build; add them to \
         xtask's feature unification list:\n{}",
        drift.join("\n")
    );
    for (what, tests) in [
        ("cargo test --workspace", &workspace_tests),
        ("cargo test -p xtask -p stacks", &xtask_tests),
    ] {
        let drift = feature_drift(&xtask_run, tests);
        assert!(
            drift.is_empty(),
            "`{what}` needs other features than xtask's build; add them to xtask's feature \
             unification list:\n{}",
            drift.join("\n")
        );
    }
}

/// The Lambda build of the real functions resolves only what they use: no aws-lc (ring is the
/// crypto provider), no regex (no env-filter), no SSO client, no legacy hyper 0.14 stack, no
/// S3 client.
#[test]
fn lambda_builds_leave_out_what_the_functions_do_not_use() {
    let functions = build::discover(&repo_root()).unwrap();
    let mut selection = vec!["-e", "normal", "--target", "x86_64-unknown-linux-gnu"];
    for f in &functions {
        selection.extend(["-p", f.name.as_str()]);
    }
    let lambda = resolved_features(&selection);
    let unwanted = [
        "aws-lc-rs ",
        "aws-lc-sys ",
        "regex ",
        "regex-automata ",
        "aws-sdk-sso ",
        "hyper v0.14",
        "rustls v0.21",
    ];
    let found: Vec<_> = lambda
        .keys()
        .filter(|p| unwanted.iter().any(|u| p.starts_with(u)))
        .collect();
    assert!(found.is_empty(), "{found:?}");
    assert!(lambda.keys().any(|p| p.starts_with("ring ")));

    // No function links the S3 client: invoice-core signs its two S3 requests itself.
    assert!(lambda.keys().any(|p| p.starts_with("aws-sdk-dynamodb ")));
    assert!(!lambda.keys().any(|p| p.starts_with("aws-sdk-s3 ")));
}

/// Installs ziglang and cargo-zigbuild from PyPI into a fresh venv: needs the network and
/// ~15 s, so it only runs on request (`cargo test -p xtask --test build -- --ignored`).
#[test]
#[ignore = "downloads ziglang and cargo-zigbuild from PyPI"]
fn ensure_zigbuild_installs_into_a_fresh_venv() {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let exe = build::ensure_zigbuild(&venv).unwrap();
    assert!(exe.is_file(), "{}", exe.display());
    assert!(build::find_zigbuild(&venv).is_some());
    // Idempotent: a second call finds what the first installed.
    assert_eq!(build::ensure_zigbuild(&venv).unwrap(), exe);
}
