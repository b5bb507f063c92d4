//! Secret files (bearer tokens, TLS private keys): read only when no one but their owner can read
//! or write them, so a key left world-readable by an install step is refused with the command that
//! fixes it rather than used.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} is accessible to group or others (mode {mode:04o}); a secret must be private to its owner: chmod 600 {path}")]
    Open {
        what: &'static str,
        path: String,
        mode: u32,
    },
    #[error("{what} {path} is empty")]
    Empty { what: &'static str, path: String },
}

/// Reads a secret file after checking that its mode gives nothing to group and others.
pub fn read_secret(what: &'static str, path: &Path) -> Result<Vec<u8>, SecretError> {
    let shown = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SecretError::Read {
        what,
        path: shown(),
        source,
    })?;
    // Checked on the open file, so the mode is that of what is read.
    let meta = file.metadata().map_err(|source| SecretError::Read {
        what,
        path: shown(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Open {
            what,
            path: shown(),
            mode,
        });
    }
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut data).map_err(|source| SecretError::Read {
        what,
        path: shown(),
        source,
    })?;
    Ok(data)
}

/// A bearer token: a private file's text, trimmed, not empty.
pub fn read_token(what: &'static str, path: &Path) -> Result<String, SecretError> {
    let data = read_secret(what, path)?;
    let t = String::from_utf8_lossy(&data).trim().to_string();
    if t.is_empty() {
        return Err(SecretError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(t)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn group_or_other_access_is_refused_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, "secret\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_token("token file", &p).unwrap_err().to_string();
            assert!(
                e.contains(&format!("(mode {mode:04o})")) && e.contains("chmod 600"),
                "{e}"
            );
            assert!(e.starts_with(&format!("token file {}", p.display())), "{e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token("token file", &p).unwrap(), "secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_token("token file", &p).unwrap(), "secret");
    }

    #[test]
    fn empty_and_missing_files_say_so() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t");
        std::fs::write(&p, " \n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_token("token file", &p).unwrap_err().to_string();
        assert!(e.ends_with("is empty"), "{e}");
        let e = read_token("token file", &d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
    }
}
