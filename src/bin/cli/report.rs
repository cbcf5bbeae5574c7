//! Reporting a failed command: one line on stderr and a non-zero exit code.

use std::process::ExitCode;

/// Prints `pmt: error: <message>` (one line, with its causes folded in) and returns the failure code.
pub fn report(err: &anyhow::Error) -> ExitCode {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    eprintln!("pmt: error: {line}");
    ExitCode::from(1)
}
