//! `pmt-sample`: the same program as `pmt sample`.

fn main() -> std::process::ExitCode {
    pymemtrace::cli::pmt_sample_main(std::env::args_os())
}
