//! `mandate`: the server (`mandate serve`) and the operator CLI, which talks to
//! a running server's admin API. Wiring only: the work happens in the crates.

mod cli;
mod commands;
mod demo;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of the system allocator: a request allocates many small,
/// short-lived buffers (headers, JSON, claims), and glibc's malloc/free were
/// 7–8% of the server's CPU (docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
