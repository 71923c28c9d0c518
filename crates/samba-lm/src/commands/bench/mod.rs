//! `samba-lm bench`: throughput and memory measurements, each printed next to its floor.
//! Benchmarks measure; tests never assert timings.

mod forward;
mod inference;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Forward-pass throughput on the CPU (tokens/s) for a preset with random weights.
    Forward(forward::ForwardArgs),
    /// Prompt processing (chunked prefill into a recurrent state) on the CPU, tokens/s.
    Prefill(inference::PrefillArgs),
    /// Token-by-token decoding on the CPU after a context of a given length, tokens/s.
    Decode(inference::DecodeArgs),
    /// Peak resident memory while streaming (scoring) an input of a given length.
    Memory(inference::MemoryArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => forward::run(args),
        BenchCommand::Prefill(args) => inference::prefill(args),
        BenchCommand::Decode(args) => inference::decode(args),
        BenchCommand::Memory(args) => inference::memory(args),
    }
}
