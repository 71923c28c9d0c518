//! `samba-lm score`: log-probabilities of each next token of an input.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use samba_model::checkpoint::load_model;
use samba_runtime::Engine;
use serde::Serialize;

use super::device::DeviceArgs;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["tokens", "text", "file"])))]
pub struct ScoreArgs {
    /// The model folder.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Token ids, comma-separated (e.g. 1,2,3).
    #[arg(long, value_name = "IDS")]
    pub tokens: Option<String>,
    /// Text, tokenized with the model folder's tokenizer.json.
    #[arg(long, value_name = "STR")]
    pub text: Option<String>,
    /// A UTF-8 text file, tokenized with the model folder's tokenizer.json.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print only the totals, not a line per token.
    #[arg(long, conflicts_with = "json")]
    pub summary: bool,
    /// Tokens per forward pass: the input streams through the model in chunks of this many,
    /// carrying the recurrent state, so memory does not grow with the input.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk: u64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Serialize)]
struct ScoreReport {
    tokens: Vec<u32>,
    /// log p(tokens[i + 1] | tokens[..=i]), natural log.
    token_logprobs: Vec<f64>,
    mean_nll: f64,
    perplexity: f64,
}

/// Parses "1, 2,3" into token ids, naming the bad entry on error.
pub fn parse_token_list(list: &str) -> Result<Vec<u32>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, s)| {
            s.parse::<u32>().with_context(|| {
                format!("--tokens: entry {i} ('{s}') is not a token id (a non-negative integer)")
            })
        })
        .collect()
}

fn input_tokens(args: &ScoreArgs, tokenizer: Option<&std::path::Path>) -> Result<Vec<u32>> {
    if let Some(list) = &args.tokens {
        return parse_token_list(list);
    }
    let text = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("--file {}", path.display()))?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "--file {}: not UTF-8 text (invalid byte at offset {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                )
            })?
        }
        (None, None) => bail!("give --tokens, --text or --file"),
    };
    let Some(tokenizer) = tokenizer else {
        bail!(
            "{}: the model folder has no tokenizer.json, so text cannot be tokenized; pass --tokens, or put a tokenizer.json in the folder",
            args.model.display()
        );
    };
    crate::commands::text::encode(tokenizer, &text)
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let loaded = load_model(&args.model)?;
    let tokens = input_tokens(&args, loaded.tokenizer.as_deref())?;
    if tokens.len() < 2 {
        bail!(
            "the input has {} token(s); scoring needs at least 2 (each token after the first is scored given the ones before it)",
            tokens.len()
        );
    }
    // Check every id before any work.
    samba_cpu::error::check_tokens("tokens", &tokens, 1, tokens.len(), loaded.config.vocab)?;
    let engine = args.device.engine(loaded)?;
    let token_logprobs = score_tokens(&engine, &tokens, args.chunk as usize)?;
    let mean_nll = -token_logprobs.iter().sum::<f64>() / token_logprobs.len() as f64;
    let report = ScoreReport {
        tokens,
        token_logprobs,
        mean_nll,
        perplexity: mean_nll.exp(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        if !args.summary {
            println!("{:>8} {:>10} {:>12}", "position", "token", "logprob");
            for (i, lp) in report.token_logprobs.iter().enumerate() {
                println!("{:>8} {:>10} {:>12.4}", i + 1, report.tokens[i + 1], lp);
            }
        }
        println!("tokens     {}", report.tokens.len());
        println!("mean_nll   {:.4}", report.mean_nll);
        println!("perplexity {:.4}", report.perplexity);
    }
    Ok(())
}

/// log p(tokens[i + 1] | tokens[..=i]) for every i, streaming the input through the model in
/// chunks with a carried state (memory does not grow with the input), with a progress bar.
pub fn score_tokens(engine: &Engine, tokens: &[u32], chunk: usize) -> Result<Vec<f64>> {
    let bar = progress(tokens.len());
    let logprobs = samba_eval::scoring::score_tokens(engine, tokens, chunk, |done| {
        bar.set_position(done.len() as u64)
    })?;
    bar.finish_and_clear();
    Ok(logprobs)
}

/// A progress bar for long inputs (hidden for short ones and when stderr is not a terminal).
fn progress(tokens: usize) -> indicatif::ProgressBar {
    if tokens < 4096 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(tokens as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tokens, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
