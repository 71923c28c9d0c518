//! `samba-lm tokenizer ...`: train a byte-level BPE tokenizer, or try one on a string.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use samba_data::sources::ReadOptions;
use samba_data::tokenizer::{train_on_files, DEFAULT_VOCAB_SIZE};
use samba_data::{TextTokenizer, TrainConfig};

#[derive(clap::Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train byte-level BPE (with <|bos|>, <|eos|>, <|pad|>) on files and folders of
    /// .txt/.md/.rst/.jsonl, optionally .gz/.zst.
    Train {
        /// Files and folders to learn from.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Vocabulary size, special tokens and the 256 byte symbols included.
        #[arg(long, default_value_t = DEFAULT_VOCAB_SIZE)]
        vocab_size: usize,
        /// Where to write the tokenizer.json.
        #[arg(long, default_value = "tokenizer.json")]
        out: PathBuf,
        /// A pair must occur this often to become a merge.
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Encode a string and show the tokens (and check that they decode back).
    Encode {
        #[arg(long, default_value = "tokenizer.json")]
        tokenizer: PathBuf,
        text: String,
    },
}

pub fn run(cmd: TokenizerCommand) -> anyhow::Result<()> {
    match cmd {
        TokenizerCommand::Train {
            input,
            vocab_size,
            out,
            min_frequency,
            threads,
            quiet,
        } => {
            let config = TrainConfig {
                vocab_size,
                min_frequency,
                ..TrainConfig::default()
            };
            let start = Instant::now();
            let pool = thread_pool(threads)?;
            let (tokenizer, report) =
                pool.install(|| train_on_files(&input, &config, ReadOptions::default(), !quiet))?;
            let seconds = start.elapsed().as_secs_f64();
            tokenizer
                .save(&out)
                .with_context(|| format!("writing the tokenizer to {}", out.display()))?;
            let mb = report.text_bytes() as f64 / 1e6;
            println!(
                "trained a {}-token byte-level BPE on {} documents ({mb:.1} MB) from {} files in {seconds:.1} s ({:.2} MB/s)",
                tokenizer.vocab_size(),
                report.documents(),
                report.sources.len(),
                mb / seconds.max(1e-9)
            );
            print_skipped(&report.skipped, None);
            println!("wrote {} (sha256 {})", out.display(), tokenizer.sha256());
            if tokenizer.vocab_size() < vocab_size {
                println!(
                    "note: the corpus supported only {} tokens of the {vocab_size} asked for",
                    tokenizer.vocab_size()
                );
            }
            Ok(())
        }
        TokenizerCommand::Encode { tokenizer, text } => {
            let tok = TextTokenizer::from_file(&tokenizer)?;
            let ids = tok.encode(&text)?;
            let pieces: Vec<String> = ids
                .iter()
                .map(|&i| tok.token_text(i).unwrap_or_default())
                .collect();
            println!("{} bytes -> {} tokens", text.len(), ids.len());
            println!("ids:    {ids:?}");
            println!("tokens: {pieces:?}");
            let back = tok.decode(&ids)?;
            anyhow::ensure!(back == text, "decode gave {back:?}, not the input");
            println!("decode: round trip ok");
            Ok(())
        }
    }
}

/// A rayon pool of `threads` workers (default: one per core).
pub(crate) fn thread_pool(threads: Option<usize>) -> anyhow::Result<rayon::ThreadPool> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        builder = builder.num_threads(n);
    }
    builder.build().context("starting worker threads")
}

/// Print the skipped-item summary: counts by kind and the first few items.
pub(crate) fn print_skipped(skipped: &[samba_data::Skipped], listing: Option<&std::path::Path>) {
    if skipped.is_empty() {
        println!("skipped nothing");
        return;
    }
    let counts = samba_data::sources::count_skipped(skipped);
    let kinds: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("skipped {} items: {}", skipped.len(), kinds.join(", "));
    const SHOWN: usize = 10;
    for s in skipped.iter().take(SHOWN) {
        println!("  {s}");
    }
    if skipped.len() > SHOWN {
        match listing {
            Some(path) => println!(
                "  ... {} more, all listed in {}",
                skipped.len() - SHOWN,
                path.display()
            ),
            None => println!("  ... {} more", skipped.len() - SHOWN),
        }
    }
}
