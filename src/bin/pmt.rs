//! `pmt`: the pymemtrace command line.

fn main() -> std::process::ExitCode {
    pymemtrace::cli::pmt_main(std::env::args_os())
}
