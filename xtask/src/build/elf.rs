//! What a built `bootstrap` needs from the machine it runs on, read from its ELF headers.
//!
//! Lambda's `provided.al2023` ships glibc 2.34. A binary linked against a newer glibc starts
//! fine on the build machine and dies on Lambda with "GLIBC_2.xx not found" at the first cold
//! start, so the versioned symbol requirements (`.gnu.version_r`, "verneed") are checked
//! before anything is packaged. The dynamic linker refuses to start a binary whose verneed
//! names a version the installed glibc lacks, so the highest `GLIBC_x.y` there is exactly the
//! oldest glibc the binary runs on.

use std::path::{Path, PathBuf};

use object::read::elf::ElfFile64;
use object::{Architecture, Endianness, FileKind, Object};

use super::{Error, Result};

/// The newest glibc available on Lambda's `provided.al2023` runtime.
pub const LAMBDA_GLIBC: (u32, u32) = (2, 34);

/// What the packager needs to know about a built binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine` in words, e.g. `x86_64`.
    pub machine: String,
    /// Highest `GLIBC_x.y` the binary requires; `None` for static or non-glibc binaries.
    pub glibc: Option<(u32, u32)>,
}

/// Highest `GLIBC_x.y` symbol version an ELF binary requires, or `None` if it needs none.
///
/// Errors name no file (there is none here); [`inspect`] is the variant that does.
pub fn glibc_ceiling(elf_bytes: &[u8]) -> Result<Option<(u32, u32)>> {
    inspect(Path::new("<elf bytes>"), elf_bytes).map(|info| info.glibc)
}

/// Reads machine and glibc requirement of the ELF binary `bytes`, read from `path`.
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<ElfInfo> {
    let bad = |reason: String| Error::NotElf {
        path: path.to_path_buf(),
        reason,
    };
    match FileKind::parse(bytes) {
        Ok(FileKind::Elf64) => {}
        Ok(FileKind::Elf32) => {
            return Err(bad("32-bit ELF; Lambda needs a 64-bit x86_64 binary".into()));
        }
        Ok(other) => return Err(bad(format!("file format is {other:?}, not ELF"))),
        Err(_) => return Err(bad("unrecognised file format".into())),
    }
    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|e| bad(e.to_string()))?;
    let endian = elf.endian();
    let machine = match elf.architecture() {
        Architecture::X86_64 => "x86_64".to_owned(),
        Architecture::Aarch64 => "aarch64".to_owned(),
        other => format!("{other:?}").to_lowercase(),
    };

    let sections = elf.elf_section_table();
    let mut ceiling: Option<(u32, u32)> = None;
    if let Some((mut needs, link)) = sections
        .gnu_verneed(endian, bytes)
        .map_err(|e| bad(format!("malformed .gnu.version_r: {e}")))?
    {
        let strings = sections
            .strings(endian, bytes, link)
            .map_err(|e| bad(format!("malformed .gnu.version_r string table: {e}")))?;
        while let Some((_need, mut auxes)) = needs
            .next()
            .map_err(|e| bad(format!("malformed .gnu.version_r: {e}")))?
        {
            while let Some(aux) = auxes
                .next()
                .map_err(|e| bad(format!("malformed .gnu.version_r entry: {e}")))?
            {
                let name = aux
                    .name(endian, strings)
                    .map_err(|e| bad(format!("malformed .gnu.version_r name: {e}")))?;
                if let Some(version) = glibc_version(name) {
                    ceiling = ceiling.max(Some(version));
                }
            }
        }
    }
    Ok(ElfInfo {
        machine,
        glibc: ceiling,
    })
}

/// Refuses a binary Lambda `provided.al2023` x86_64 could not start.
pub fn check_lambda(path: &Path, info: &ElfInfo) -> Result<()> {
    check_machine(path, info)?;
    if let Some(found) = info.glibc
        && found > LAMBDA_GLIBC
    {
        return Err(Error::GlibcTooNew {
            path: PathBuf::from(path),
            found,
            limit: LAMBDA_GLIBC,
        });
    }
    Ok(())
}

/// Refuses anything but x86_64: the stack deploys every function with that architecture.
pub fn check_machine(path: &Path, info: &ElfInfo) -> Result<()> {
    if info.machine != "x86_64" {
        return Err(Error::WrongMachine {
            path: path.to_path_buf(),
            found: info.machine.clone(),
        });
    }
    Ok(())
}

/// `GLIBC_2.34` -> (2, 34); `GLIBC_2.2.5` -> (2, 2). `GLIBC_PRIVATE` is not a version.
///
/// `GLIBC_ABI_DT_RELR` is what a linker adds for packed relative relocations; only glibc
/// 2.36+ provides it, so it counts as 2.36 (a host `-z pack-relative-relocs` link would
/// otherwise slip through as "2.34").
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    if name == b"GLIBC_ABI_DT_RELR" {
        return Some((2, 36));
    }
    let rest = std::str::from_utf8(name.strip_prefix(b"GLIBC_")?).ok()?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_glibc_version_names() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_2.3.4"), Some((2, 3)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version(b"GLIBC_ABI_DT_RELR"), Some((2, 36)));
        assert_eq!(glibc_version(b"GCC_3.0"), None);
        assert_eq!(glibc_version(b"GLIBCXX_3.4.29"), None);
    }

    #[test]
    fn versions_compare_numerically_not_as_text() {
        // "2.4" < "2.34" as numbers although "2.4" > "2.34" as text.
        assert!(glibc_version(b"GLIBC_2.4") < glibc_version(b"GLIBC_2.34"));
    }

    #[test]
    fn rejects_non_elf_naming_the_file() {
        let err = inspect(Path::new("/x/bootstrap"), b"#!/bin/sh\necho hi\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/x/bootstrap"), "{msg}");
        assert!(msg.contains("not an elf"), "{msg}");
    }

    #[test]
    fn refuses_glibc_above_the_lambda_limit() {
        let info = ElfInfo {
            machine: "x86_64".into(),
            glibc: Some((2, 36)),
        };
        let msg = check_lambda(Path::new("bootstrap"), &info)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("GLIBC_2.36") && msg.contains("GLIBC_2.34"),
            "{msg}"
        );
        let ok = ElfInfo {
            glibc: Some((2, 34)),
            ..info
        };
        check_lambda(Path::new("bootstrap"), &ok).unwrap();
    }

    #[test]
    fn refuses_other_machines() {
        let info = ElfInfo {
            machine: "aarch64".into(),
            glibc: None,
        };
        let msg = check_lambda(Path::new("bootstrap"), &info)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("aarch64") && msg.contains("x86_64"), "{msg}");
    }
}
