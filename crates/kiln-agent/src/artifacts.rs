//! How a host's run ends up: the `FailureReason` from `output/failure` or the exit status, the
//! toolkit's own failure file for scripts that did not write one, and the model and output
//! archives uploaded to `<output_prefix>/`.

use std::path::Path;

use crate::launch::Exit;

/// The longest `FailureReason` SageMaker returns.
pub const MAX_FAILURE_REASON: usize = 1024;

/// `AlgorithmError: <first characters of output/failure>` (at most [`MAX_FAILURE_REASON`] in
/// all), or the exit status when there is no failure text.
pub fn algorithm_error(exit: Exit, failure_text: Option<&str>) -> String {
    const PREFIX: &str = "AlgorithmError: ";
    let body = match failure_text.map(str::trim_end).filter(|t| !t.is_empty()) {
        Some(text) => text.chars().take(MAX_FAILURE_REASON - PREFIX.len()).collect(),
        None => match exit {
            Exit::Code(c) => format!("Exit Code: {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        },
    };
    format!("{PREFIX}{body}")
}

/// A `ClientError: ...` reason, cut to the length SageMaker allows.
pub fn client_error(message: &str) -> String {
    format!("ClientError: {message}")
        .chars()
        .take(MAX_FAILURE_REASON)
        .collect()
}

/// The text of `output/failure`, if the algorithm wrote one (read lossily; at most 64 KiB).
pub fn read_failure(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.take(64 * 1024).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

/// What sagemaker-training-toolkit writes to `output/failure` when the user's script fails
/// (`ExecuteUserScriptError`, `InstallRequirementsError`, ...).
pub fn toolkit_failure(kind: &str, returncode: i32, stderr_tail: &[String], command: &str) -> String {
    let message = stderr_tail.join("\n");
    format!("{kind}:\nExitCode {returncode}\nErrorMessage \"{message}\"\nCommand \"{command}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons() {
        assert_eq!(algorithm_error(Exit::Code(3), None), "AlgorithmError: Exit Code: 3");
        assert_eq!(
            algorithm_error(Exit::Signal(9), Some("  \n")),
            "AlgorithmError: killed by signal 9"
        );
        assert_eq!(
            algorithm_error(Exit::Code(1), Some("bad input\n")),
            "AlgorithmError: bad input"
        );
        let long = "é".repeat(5000);
        let r = algorithm_error(Exit::Code(1), Some(&long));
        assert_eq!(r.chars().count(), MAX_FAILURE_REASON);
        assert!(r.starts_with("AlgorithmError: éé"));
        assert_eq!(client_error(&"x".repeat(2000)).chars().count(), MAX_FAILURE_REASON);
    }

    #[test]
    fn toolkit_failure_text() {
        assert_eq!(
            toolkit_failure(
                "ExecuteUserScriptError",
                1,
                &["Traceback (most recent call last):".into(), "ValueError: boom".into()],
                "/usr/bin/python3 train.py --epochs 1"
            ),
            "ExecuteUserScriptError:\nExitCode 1\nErrorMessage \"Traceback (most recent call last):\nValueError: boom\"\nCommand \"/usr/bin/python3 train.py --epochs 1\""
        );
    }

    #[test]
    fn failure_file_is_read_lossily() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("failure");
        assert_eq!(read_failure(&p), None);
        std::fs::write(&p, b"bad \xff byte").unwrap();
        assert_eq!(read_failure(&p).as_deref(), Some("bad \u{fffd} byte"));
        std::fs::write(&p, b"   ").unwrap();
        assert_eq!(read_failure(&p), None);
    }
}
