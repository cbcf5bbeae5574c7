//! Reporting a command's outcome: one line on stderr and a non-zero exit code on failure.

use std::process::ExitCode;

/// Maps a subcommand's result to its exit code, printing a failure as one line.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

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

/// Prints clap's message (usage errors, `--help`, `--version`) and returns clap's exit code.
pub fn clap_exit(err: clap::Error) -> ExitCode {
    let code = err.exit_code();
    // Printing help can only fail if stdout is gone; there is nothing left to report to then.
    let _ = err.print();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
