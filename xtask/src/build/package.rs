//! Reproducible Lambda zips: the same `bootstrap` bytes give the same zip bytes on any machine.
//!
//! Everything a zip writer would normally take from the environment is fixed here: the one
//! entry is always named `bootstrap`, stamped 1980-01-01 00:00 (the DOS epoch, the earliest
//! time a zip can hold) instead of the file's mtime, marked as a Unix regular file with mode
//! 0755, deflated at a fixed level by miniz_oxide (pinned in `Cargo.toml`; it has no
//! CPU-dependent code paths), and carries no extra fields (no extended timestamps, no
//! uid/gid). The file's own metadata is never read, so a copy, a checkout or a `touch` cannot
//! change the hash. Lambda reports the zip's SHA-256 as `CodeSha256`, so a stable zip is what
//! lets a deploy skip unchanged code.

use std::io::{Cursor, Write};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::{Error, Result};

/// The only entry in a function zip: what `provided.al2023` executes.
pub const ENTRY_NAME: &str = "bootstrap";
/// Deflate level: zlib's default, a fair trade of size for speed; fixed so output is stable.
const DEFLATE_LEVEL: i64 = 6;

/// Zips `binary` (the bytes of a `bootstrap` executable) in memory, reproducibly.
///
/// `path` only names the binary in errors.
pub fn zip_bootstrap(path: &Path, binary: &[u8]) -> Result<Vec<u8>> {
    let zip_err = |source| Error::Zip {
        path: path.to_path_buf(),
        source,
    };
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(DEFLATE_LEVEL))
        .last_modified_time(DateTime::default())
        .system(zip::System::Unix)
        .unix_permissions(0o755)
        .large_file(false);
    let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(binary.len() / 2)));
    zip.start_file(ENTRY_NAME, options).map_err(zip_err)?;
    zip.write_all(binary).map_err(|e| Error::Io {
        action: "compress",
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(zip.finish().map_err(zip_err)?.into_inner())
}

/// SHA-256 of `bytes` as lowercase hex (what the artifact key uses) and as base64 of the raw
/// digest (what Lambda reports as `CodeSha256`).
pub fn sha256_hex_and_b64(bytes: &[u8]) -> (String, String) {
    let digest = Sha256::digest(bytes);
    (
        hex::encode(digest),
        base64::engine::general_purpose::STANDARD.encode(digest),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_has_one_executable_entry_with_a_fixed_time() {
        let bytes = zip_bootstrap(Path::new("b"), b"\x7fELF pretend").unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes)).unwrap();
        assert_eq!(archive.len(), 1);
        let entry = archive.by_index(0).unwrap();
        assert_eq!(entry.name().unwrap(), "bootstrap");
        // Regular file (S_IFREG) with rwxr-xr-x.
        assert_eq!(entry.unix_mode(), Some(0o100755));
        assert_eq!(entry.compression(), CompressionMethod::Deflated);
        assert_eq!(entry.extra_data().as_deref().map_or(0, <[u8]>::len), 0);
        let t = entry.last_modified().unwrap();
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (1980, 1, 1, 0, 0)
        );
        // The local header's own extra-field length (offset 28) is zero too: no extended
        // timestamp, no uid/gid, no alignment padding.
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        assert_eq!(&bytes[28..30], &[0, 0]);
    }

    #[test]
    fn same_bytes_same_zip() {
        let a = zip_bootstrap(Path::new("a"), &[7u8; 10_000]).unwrap();
        let b = zip_bootstrap(Path::new("b"), &[7u8; 10_000]).unwrap();
        assert_eq!(a, b);
    }

    /// Pins the exact bytes: if a dependency change (zip, flate2's backend, miniz_oxide)
    /// alters the output, every deployed function would look changed. This fails first.
    #[test]
    fn zip_bytes_are_pinned() {
        let input: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let zipped = zip_bootstrap(Path::new("pinned"), &input).unwrap();
        let (hex, _) = sha256_hex_and_b64(&zipped);
        assert_eq!(
            hex,
            "f2526706743df5c22a38e0571ded45b01b1d3617f4119793d799317fc5084431"
        );
    }

    #[test]
    fn code_sha256_is_base64_of_the_raw_digest() {
        let (hex, b64) = sha256_hex_and_b64(b"");
        assert_eq!(
            hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(b64, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }
}
