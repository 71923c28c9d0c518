//! `samba-lm data ...`: prepare token shards, describe them, measure how fast that is.

use std::path::PathBuf;

use anyhow::Context;
use samba_data::index::{TokenDtype, SKIPPED_FILE};
use samba_data::{PrepareConfig, ReadOptions, TextTokenizer};

use super::tokenizer::print_skipped;

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Tokenize files and folders of .txt/.md/.rst/.jsonl (optionally .gz/.zst) into packed
    /// token shards with an index.json.
    Prepare {
        /// Files and folders to read.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// A tokenizer.json (from `samba-lm tokenizer train` or any with an EOS token).
        #[arg(long, default_value = "tokenizer.json")]
        tokenizer: PathBuf,
        /// Output folder (written beside, then renamed into place).
        #[arg(long)]
        out: PathBuf,
        /// Fraction of documents (chosen by a hash of their text) for validation.
        #[arg(long, default_value_t = 0.01)]
        val_fraction: f64,
        /// Tokenizer threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Shard width: u16 or u32 (default: the narrowest that fits the vocabulary).
        #[arg(long)]
        dtype: Option<TokenDtype>,
        /// Tokens per shard file.
        #[arg(long, default_value_t = 1 << 27)]
        shard_tokens: u64,
        /// Longest accepted line in bytes; longer lines (and their documents) are skipped.
        #[arg(long, default_value_t = ReadOptions::default().max_line_bytes)]
        max_line_bytes: usize,
        /// Replace an existing output folder once the new one is complete.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Documents, tokens, bytes per token and the most frequent tokens of a prepared folder.
    Stats {
        dir: PathBuf,
        /// How many of the most frequent tokens to list.
        #[arg(long, default_value_t = 20)]
        top: usize,
        /// Tokenizer to show token strings (default: the one named in the index, if present).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure tokenizer training and data preparation throughput (MB/s of text).
    Bench {
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long, default_value_t = samba_data::tokenizer::DEFAULT_VOCAB_SIZE)]
        vocab_size: usize,
        #[arg(long)]
        threads: Option<usize>,
        /// Scratch folder for the tokenizer and shards it makes.
        #[arg(long, default_value = "target/data-bench")]
        work: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Prepare {
            input,
            tokenizer,
            out,
            val_fraction,
            threads,
            dtype,
            shard_tokens,
            max_line_bytes,
            force,
            quiet,
        } => {
            let tok = TextTokenizer::from_file(&tokenizer)?;
            let config = PrepareConfig {
                val_fraction,
                threads,
                dtype,
                shard_tokens,
                read: ReadOptions { max_line_bytes },
                progress: !quiet,
                overwrite: force,
                ..PrepareConfig::default()
            };
            let report = samba_data::prepare(&input, &tok, &tokenizer, &out, &config)
                .with_context(|| format!("preparing {}", out.display()))?;
            let index = &report.index;
            for (name, s) in [("train", &index.train), ("val", &index.val)] {
                println!(
                    "{name:<5} {:>9} documents {:>13} tokens {:>6} shards {:>8.1} MB text",
                    s.documents,
                    s.tokens,
                    s.shards.len(),
                    s.text_bytes as f64 / 1e6
                );
            }
            println!(
                "{} sources, {} shards, vocab {}, in {:.1} s ({:.2} MB/s)",
                index.sources.len(),
                index.dtype.name(),
                index.tokenizer.vocab_size,
                report.seconds,
                report.mb_per_s()
            );
            print_skipped(&report.skipped, Some(&out.join(SKIPPED_FILE)));
            println!("wrote {}", out.display());
            Ok(())
        }
        DataCommand::Stats {
            dir,
            top,
            tokenizer,
            json,
        } => {
            let index = samba_data::DataIndex::load(&dir)?;
            let path = tokenizer.unwrap_or_else(|| index.tokenizer.path.clone());
            // Token strings are a nicety: show them only from the very tokenizer that made the data.
            let tok = TextTokenizer::from_file(&path)
                .ok()
                .filter(|t| t.sha256() == index.tokenizer.sha256);
            let stats = samba_data::stats::compute(&dir, top, tok.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{stats}");
            }
            Ok(())
        }
        DataCommand::Bench {
            input,
            vocab_size,
            threads,
            work,
            json,
        } => {
            let report = samba_data::bench::run(&input, vocab_size, threads, &work, true)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} documents, {:.1} MB of text, {} tokens, {} threads",
                    report.documents,
                    report.text_bytes as f64 / 1e6,
                    report.tokens,
                    report.threads
                );
                println!(
                    "tokenizer train (vocab {}): {:>7.1} s  {:>7.2} MB/s",
                    report.vocab_size, report.train_seconds, report.train_mb_per_s
                );
                println!(
                    "data prepare:                {:>7.1} s  {:>7.2} MB/s",
                    report.prepare_seconds, report.prepare_mb_per_s
                );
            }
            Ok(())
        }
    }
}
