//! Finding (or installing) `cargo-zigbuild` and zig, the cross toolchain for Lambda builds.
//!
//! zig's bundled glibc stubs let the linker target glibc 2.34 exactly (the triple suffix in
//! `x86_64-unknown-linux-gnu.2.34`), whatever glibc the build machine has. Both tools come
//! from PyPI (`cargo-zigbuild` ships binary wheels, `ziglang` wraps the zig toolchain), the
//! only place besides crates.io a machine here can download from, and go into a project-local
//! venv (`.xtask/venv`, git-ignored) so nothing is installed system-wide.
//!
//! cargo-zigbuild looks for zig as `python3 -m ziglang` first (`python3` from
//! `CARGO_ZIGBUILD_PYTHON_PATH` or `PATH`), then `zig` on `PATH`. [`zig_env`] points both at
//! the venv, so the venv's zig is used even when the shell has not activated it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Error, Result};

/// The venv's `bin` directory.
pub fn venv_bin(venv_dir: &Path) -> PathBuf {
    venv_dir.join("bin")
}

/// `cargo-zigbuild` from the venv, else from `PATH`, if zig is reachable too. Never installs.
pub fn find_zigbuild(venv_dir: &Path) -> Option<PathBuf> {
    let exe = which("cargo-zigbuild", &search_path(venv_dir))?;
    zig_version(venv_dir).map(|_| exe)
}

/// `cargo-zigbuild` ready to use: found on `PATH` or in the venv, else installed into the venv
/// (`python3 -m venv`, then `pip install ziglang cargo-zigbuild`). Progress goes to stderr.
pub fn ensure_zigbuild(venv_dir: &Path) -> Result<PathBuf> {
    let path = search_path(venv_dir);
    let have_exe = which("cargo-zigbuild", &path);
    let have_zig = zig_version(venv_dir);
    if let (Some(exe), Some(_)) = (&have_exe, &have_zig) {
        return Ok(exe.clone());
    }

    let python = venv_bin(venv_dir).join("python3");
    if !python.exists() {
        eprintln!("build: creating python venv {}", venv_dir.display());
        let system_python = which("python3", &std::env::var_os("PATH").unwrap_or_default())
            .ok_or(Error::PythonMissing)?;
        run(
            Command::new(system_python)
                .arg("-m")
                .arg("venv")
                .arg(venv_dir),
            &format!("python3 -m venv {}", venv_dir.display()),
        )?;
    }
    let mut packages = Vec::new();
    if have_zig.is_none() {
        packages.push("ziglang");
    }
    if have_exe.is_none() {
        packages.push("cargo-zigbuild");
    }
    eprintln!(
        "build: installing {} into {} (from PyPI)",
        packages.join(" and "),
        venv_dir.display()
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(&packages),
        &format!("pip install {}", packages.join(" ")),
    )?;

    let exe = which("cargo-zigbuild", &path).ok_or_else(|| Error::ToolMissing {
        tool: "cargo-zigbuild".into(),
        hint: format!(
            "pip installed it, yet it is not in {}",
            venv_bin(venv_dir).display()
        ),
    })?;
    let version = zig_version(venv_dir).ok_or_else(|| Error::ToolMissing {
        tool: "zig".into(),
        hint: format!(
            "`{} -m ziglang version` fails after installing ziglang",
            python.display()
        ),
    })?;
    eprintln!("build: using {} with zig {version}", exe.display());
    Ok(exe)
}

/// Environment for running cargo-zigbuild: the venv's `bin` first on `PATH` and, when the
/// venv has a python, `CARGO_ZIGBUILD_PYTHON_PATH` set to it.
pub fn zig_env(venv_dir: &Path) -> Vec<(OsString, OsString)> {
    let mut env = vec![("PATH".into(), search_path(venv_dir))];
    let python = venv_bin(venv_dir).join("python3");
    if python.exists() && ziglang_version(&python).is_some() {
        env.push(("CARGO_ZIGBUILD_PYTHON_PATH".into(), python.into_os_string()));
    }
    env
}

/// The zig version cargo-zigbuild would find with [`zig_env`], if any.
fn zig_version(venv_dir: &Path) -> Option<String> {
    let venv_python = venv_bin(venv_dir).join("python3");
    if venv_python.exists()
        && let Some(v) = ziglang_version(&venv_python)
    {
        return Some(v);
    }
    let path = search_path(venv_dir);
    if let Some(python) = which("python3", &path)
        && let Some(v) = ziglang_version(&python)
    {
        return Some(v);
    }
    let zig = which("zig", &path)?;
    output_line(Command::new(zig).arg("version"))
}

fn ziglang_version(python: &Path) -> Option<String> {
    output_line(Command::new(python).args(["-m", "ziglang", "version"]))
}

fn output_line(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// `PATH` with the venv's `bin` in front.
fn search_path(venv_dir: &Path) -> OsString {
    let mut dirs = vec![venv_bin(venv_dir)];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// First executable file called `name` in the directories of `path`.
fn which(name: &str, path: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    // The tool's own output goes to stderr (stdout may carry a JSON plan): an install takes
    // a while and its errors (no network, no wheel for this platform) are what the user needs.
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|source| Error::Spawn {
            what: what.to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(Error::CommandFailed {
            what: what.to_owned(),
            status,
        });
    }
    Ok(())
}
