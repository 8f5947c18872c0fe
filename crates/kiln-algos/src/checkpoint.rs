//! Checkpoints as SageMaker's XGBoost container writes them: `xgboost-checkpoint.<round>` files
//! (the model so far, in xgboost's JSON format) in the checkpoint directory, the last
//! [`KEEP`] kept, and training resumed from the newest one.

use std::path::{Path, PathBuf};

use crate::booster::Booster;

/// File name prefix of a checkpoint (`xgboost-checkpoint.<round>`).
pub const PREFIX: &str = "xgboost-checkpoint.";

/// Checkpoints kept (the container's `save_checkpoint(max_to_keep=5)`).
pub const KEEP: usize = 5;

/// A checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
}

/// The round a file name is the checkpoint of.
fn round_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Checkpoints {
    /// Checkpoints in `dir`, keeping the last [`KEEP`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            keep: KEEP,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rounds with a checkpoint, ascending (none when the directory does not exist).
    pub fn rounds(&self) -> std::io::Result<Vec<usize>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut rounds = Vec::new();
        for e in entries {
            let e = e?;
            if let Some(r) = e.file_name().to_str().and_then(round_of)
                && e.file_type()?.is_file()
            {
                rounds.push(r);
            }
        }
        rounds.sort_unstable();
        Ok(rounds)
    }

    /// Path of round `round`'s checkpoint.
    pub fn path(&self, round: usize) -> PathBuf {
        self.dir.join(format!("{PREFIX}{round}"))
    }

    /// The newest checkpoint: (round, model text), if any.
    pub fn latest(&self) -> Result<Option<(usize, String)>, String> {
        let rounds = self
            .rounds()
            .map_err(|e| format!("could not list the checkpoint directory {}: {e}", self.dir.display()))?;
        let Some(&round) = rounds.last() else {
            return Ok(None);
        };
        let path = self.path(round);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("could not read checkpoint {}: {e}", path.display()))?;
        Ok(Some((round, text)))
    }

    /// Writes round `round`'s checkpoint atomically (a temporary file renamed into place), then
    /// removes all but the newest [`KEEP`].
    pub fn save(&self, booster: &Booster, round: usize) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("could not create the checkpoint directory {}: {e}", self.dir.display()))?;
        let path = self.path(round);
        let tmp = self.dir.join(format!(".{PREFIX}{round}.tmp"));
        std::fs::write(&tmp, booster.to_xgboost_json_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("could not write checkpoint {}: {e}", path.display()))?;
        let rounds = self
            .rounds()
            .map_err(|e| format!("could not list the checkpoint directory {}: {e}", self.dir.display()))?;
        if rounds.len() > self.keep {
            for r in &rounds[..rounds.len() - self.keep] {
                let old = self.path(*r);
                match std::fs::remove_file(&old) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(format!("could not remove old checkpoint {}: {e}", old.display())),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(round_of("xgboost-checkpoint.7"), Some(7));
        assert_eq!(round_of("xgboost-checkpoint.12"), Some(12));
        assert_eq!(round_of("xgboost-checkpoint."), None);
        assert_eq!(round_of(".xgboost-checkpoint.3.tmp"), None);
        assert_eq!(round_of("xgboost-checkpoint.3.tmp"), None);
        assert_eq!(round_of("xgboost-model"), None);
    }
}
