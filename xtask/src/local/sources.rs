//! What `--watch` compares: a snapshot of the functions' source files, so a change is
//! noticed by polling without a file-watching dependency.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Modification time and size of every file under `dir` (skipping `target` directories).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                if e.file_name() != "target" && !e.file_name().to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
            } else if let Ok(m) = meta.modified() {
                out.insert(path, (m, meta.len()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sees_new_and_changed_files_but_not_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/src")).unwrap();
        std::fs::create_dir_all(dir.path().join("a/target")).unwrap();
        std::fs::write(dir.path().join("a/src/lib.rs"), "x").unwrap();
        let first = snapshot(dir.path());
        std::fs::write(dir.path().join("a/target/out"), "y").unwrap();
        assert_eq!(snapshot(dir.path()), first);
        std::fs::write(dir.path().join("a/src/lib.rs"), "xy").unwrap();
        assert_ne!(snapshot(dir.path()), first);
    }
}
