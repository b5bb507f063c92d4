//! NDJSON alert file with size-based rotation (`alerts.ndjson` -> `alerts.ndjson.1` -> ... `.keep`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::OutputError;
use crate::config::FileOutputConfig;

/// An append-only NDJSON file that rotates when it passes `max_size`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    out: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    pub fn open(cfg: &FileOutputConfig) -> Result<RotatingFile, OutputError> {
        let path = cfg.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OutputError::File {
                path: path.clone(),
                source,
            })?;
        }
        let (out, size) = open_append(&path)?;
        Ok(RotatingFile {
            path,
            max_size: cfg.max_size.0.max(1),
            keep: cfg.keep,
            out,
            size,
        })
    }

    /// Appends one document as a line and flushes it (an alert is never left in a buffer).
    pub fn write_doc(&mut self, doc: &serde_json::Value) -> Result<(), OutputError> {
        let line = format!("{doc}\n");
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let err = |source| OutputError::File {
            path: self.path.clone(),
            source,
        };
        self.out.write_all(line.as_bytes()).map_err(err)?;
        self.out.flush().map_err(|source| OutputError::File {
            path: self.path.clone(),
            source,
        })?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), OutputError> {
        let err = |source| OutputError::File {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(err)?;
        let numbered = |n: u32| -> PathBuf {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path).map_err(|source| OutputError::File {
                path: self.path.clone(),
                source,
            })?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1)).map_err(|source| {
                        OutputError::File {
                            path: from.clone(),
                            source,
                        }
                    })?;
                }
            }
            std::fs::rename(&self.path, numbered(1)).map_err(|source| OutputError::File {
                path: self.path.clone(),
                source,
            })?;
        }
        let (out, size) = open_append(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(BufWriter<File>, u64), OutputError> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OutputError::File {
            path: path.to_path_buf(),
            source,
        })?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((BufWriter::new(f), size))
}
