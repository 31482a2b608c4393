//! Reading and writing a `PinsFile` on disk, for `pins export` / `pins import`.

use std::io::Write;
use std::path::Path;

use super::{PinError, PinsFile};

impl PinsFile {
    /// Reads and checks a pins file (see [`PinsFile`] for the format).
    pub fn read(path: &Path) -> Result<PinsFile, PinError> {
        let bytes = std::fs::read(path).map_err(|source| PinError::Io { path: path.to_path_buf(), source })?;
        PinsFile::from_json(&bytes)
    }

    /// Writes the file atomically: to a temporary file beside it, fsynced,
    /// then renamed over `path`, so an interrupted export never leaves a
    /// truncated file that a later import would half-apply.
    pub fn write(&self, path: &Path) -> Result<(), PinError> {
        let io = |source| PinError::Io { path: path.to_path_buf(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path")))?;
        let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pins::Pin;

    #[test]
    fn a_written_pins_file_reads_back_equal_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.json");
        let f = PinsFile {
            version: 1,
            pins: vec![Pin {
                registry: "r.example".into(),
                repository: "a/b".into(),
                tag: "v1".into(),
                digest: crate::oci::Digest::of(b"x"),
                pinned_at: 42,
                policy: "p".into(),
            }],
        };
        f.write(&path).unwrap();
        assert_eq!(PinsFile::read(&path).unwrap(), f);
        // Overwriting works too, and only the target file remains.
        PinsFile { version: 1, pins: vec![] }.write(&path).unwrap();
        assert!(PinsFile::read(&path).unwrap().pins.is_empty());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pins.json")]);
        assert!(matches!(PinsFile::read(&dir.path().join("missing.json")), Err(PinError::Io { .. })));
    }
}
