//! `samba-lm`: build, train, run and evaluate Samba language models from one binary.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "samba-lm", version, about = "Samba hybrid language models (Mamba + sliding-window attention + SwiGLU) in Rust", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a randomly initialized model folder (config.json + model.safetensors).
    Init(commands::init::InitArgs),
    /// Print per-token log-probabilities, mean negative log-likelihood and perplexity of a text.
    Score(commands::score::ScoreArgs),
    /// Train a model on a prepared data folder into a run folder (resumable with --resume).
    Train(commands::train::TrainArgs),
    /// Draw a run's loss and validation curves (SVG or PNG).
    Plot(commands::plot::PlotArgs),
    /// Generate text from a prompt (streamed), or from a batch of prompts.
    Generate(commands::generate::GenerateArgs),
    /// Train or try a tokenizer.
    #[command(subcommand)]
    Tokenizer(commands::tokenizer::TokenizerCommand),
    /// Prepare, describe and benchmark token shards.
    #[command(subcommand)]
    Data(commands::data::DataCommand),
    /// Evaluate a model: long-context perplexity, passkey retrieval, phonebook lookup, multiple choice.
    #[command(subcommand)]
    Eval(commands::eval::EvalCommand),
    /// Write a model folder's weights in another storage type (f32, bf16, f16).
    Convert(commands::convert::ConvertArgs),
    /// Print a model folder's configuration and parameter count, or a preset's.
    Info(commands::info::InfoArgs),
    /// Measure speed (tokens/s) against the machine.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => commands::init::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Tokenizer(cmd) => commands::tokenizer::run(cmd),
        Command::Data(cmd) => commands::data::run(cmd),
        Command::Eval(cmd) => commands::eval::run(cmd),
        Command::Convert(args) => commands::convert::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Bench(cmd) => commands::bench::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
