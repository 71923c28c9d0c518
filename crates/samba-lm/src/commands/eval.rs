//! `samba-lm eval`: the paper's evaluations (samba-eval) from the command line. Each runs on
//! the CPU or a GPU (`--device auto|cpu|cuda[:N]`, `--gpu-dtype bf16|f32`), prints a summary,
//! shows progress on stderr, and with `--out` writes a JSON report recording the model, data,
//! options, the device it ran on, version and date.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use samba_data::TextTokenizer;
use samba_eval::choice::{evaluate_choice, read_task};
use samba_eval::passkey::{evaluate_passkey, passkey_training_texts, PasskeyOptions};
use samba_eval::phonebook::{evaluate_phonebook, PhonebookOptions};
use samba_eval::ppl::{evaluate_ppl, Document, PplOptions};
use samba_eval::report::{write_report, ReportMeta};
use samba_eval::{plot, EvalModel};
use serde::Serialize;

use super::device::{open, DeviceArgs};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Perplexity of long documents by position and at given lengths (streamed, constant memory).
    Ppl(PplArgs),
    /// Passkey retrieval accuracy per (context length, depth of the key).
    Passkey(PasskeyArgs),
    /// Write passkey fine-tuning documents as JSON Lines for `samba-lm data prepare`.
    PasskeyData(PasskeyDataArgs),
    /// Phonebook lookup accuracy against the phone book's size.
    Phonebook(PhonebookArgs),
    /// Zero-shot multiple-choice accuracy (bigbench task.json or JSONL).
    Choice(ChoiceArgs),
    /// Draw the picture of a saved report (ppl, passkey or phonebook `--out` JSON).
    Plot(ReportPlotArgs),
}

#[derive(Args, Debug, Serialize)]
pub struct ModelArgs {
    /// The model folder.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The tokenizer (default: the model folder's tokenizer.json).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per forward pass (memory does not grow with the input).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug, Serialize)]
pub struct PplArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    /// Documents (UTF-8 text), each scored on its own.
    #[arg(long = "file", value_name = "PATH", num_args = 1.., required = true)]
    pub files: Vec<PathBuf>,
    /// Report cumulative perplexity at these lengths in tokens (comma-separated); also caps
    /// how much of each document is scored unless --all is given.
    #[arg(long, value_delimiter = ',')]
    pub lengths: Vec<usize>,
    /// Score whole documents even beyond the largest --lengths.
    #[arg(long)]
    pub all: bool,
    /// Position buckets per doubling.
    #[arg(long, default_value_t = 2)]
    pub buckets_per_octave: usize,
    /// Draw perplexity against position here (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug, Serialize)]
pub struct PasskeyArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    /// Prompt lengths in tokens (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub lengths: Vec<usize>,
    /// Depths of the key, evenly spaced from 0 (start) to 1 (end).
    #[arg(long, default_value_t = 11)]
    pub depths: usize,
    /// Random keys per (length, depth).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw the accuracy heatmap here (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub heatmap: Option<PathBuf>,
}

#[derive(Args, Debug, Serialize)]
pub struct PasskeyDataArgs {
    /// The tokenizer the lengths are measured with.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: PathBuf,
    /// Tokens per document (prompt and answer).
    #[arg(long)]
    pub length: usize,
    /// Documents to write.
    #[arg(long)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The JSON Lines file to write ({"text": ...} per line).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug, Serialize)]
pub struct PhonebookArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    /// Phone book sizes in entries (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub sizes: Vec<usize>,
    /// Phone books per size.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draw accuracy against size here (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Debug, Serialize)]
pub struct ChoiceArgs {
    #[command(flatten)]
    pub common: ModelArgs,
    /// Task files: bigbench task.json or JSONL {"context", "choices", "answer"}.
    #[arg(long = "tasks", value_name = "PATH", num_args = 1.., required = true)]
    pub tasks: Vec<PathBuf>,
    /// Score at most this many examples per task.
    #[arg(long)]
    pub limit: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ReportPlotArgs {
    /// A report written by `eval ppl|passkey|phonebook --out`.
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,
    /// The picture to write (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Ppl(args) => ppl(args),
        EvalCommand::Passkey(args) => passkey(args),
        EvalCommand::PasskeyData(args) => passkey_data(args),
        EvalCommand::Phonebook(args) => phonebook(args),
        EvalCommand::Choice(args) => choice(args),
        EvalCommand::Plot(args) => {
            let eval = plot::plot_report_file(&args.report, &args.out)?;
            eprintln!("{eval} picture: {}", args.out.display());
            Ok(())
        }
    }
}

/// The model on its device; says where it runs on stderr.
fn load(common: &ModelArgs) -> Result<EvalModel> {
    let device = open(&common.device.device)?;
    let m = EvalModel::load(
        &common.model,
        common.tokenizer.as_deref(),
        &device,
        common.device.gpu_dtype,
    )?;
    eprintln!("device: {}", m.engine.describe());
    Ok(m)
}

fn meta(eval: &str, m: &EvalModel, files: &[PathBuf], options: &impl Serialize) -> ReportMeta {
    let options = serde_json::to_value(options).unwrap_or(serde_json::Value::Null);
    let device = m.engine.describe();
    ReportMeta::new(
        eval,
        &m.dir,
        Some(&m.tokenizer_path),
        files,
        options,
        &device,
    )
}

fn bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}, {{per_sec}}, eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn save<T: Serialize>(out: Option<&Path>, meta: &ReportMeta, results: &T) -> Result<()> {
    if let Some(out) = out {
        write_report(out, meta, results)?;
        eprintln!("report: {}", out.display());
    }
    Ok(())
}

/// Draws a picture after the report is saved, so that a machine without fonts (which plotters
/// needs even for SVG text) loses the picture, not the evaluation.
fn draw<E: Into<anyhow::Error>>(
    path: &Path,
    report: Option<&Path>,
    f: impl FnOnce() -> std::result::Result<(), E>,
) -> Result<()> {
    match f() {
        Ok(()) => {
            eprintln!("picture: {}", path.display());
            Ok(())
        }
        Err(e) => {
            let kept = match report {
                Some(r) => format!("the report is saved in {}", r.display()),
                None => "give --out to keep the results as JSON".to_string(),
            };
            Err(e.into().context(format!(
                "{}: the picture could not be drawn ({kept}; fonts: install fontconfig and a sans-serif font)",
                path.display()
            )))
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("--file {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "--file {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn ppl(args: PplArgs) -> Result<()> {
    let m = load(&args.common)?;
    let mut documents = Vec::new();
    for path in &args.files {
        let tokens = m
            .tokenizer
            .encode(&read_text(path)?)
            .with_context(|| format!("tokenizing {}", path.display()))?;
        documents.push(Document {
            path: path.clone(),
            tokens,
        });
    }
    let max_length = args.lengths.iter().copied().max();
    let options = PplOptions {
        lengths: args.lengths.clone(),
        chunk: args.common.chunk as usize,
        buckets_per_octave: args.buckets_per_octave,
        max_tokens: if args.all { None } else { max_length },
    };
    let cap = |n: usize| options.max_tokens.map_or(n, |m| n.min(m));
    let total: usize = documents
        .iter()
        .map(|d| cap(d.tokens.len()).saturating_sub(1))
        .sum();
    let progress = bar(total as u64, "tokens");
    let report = evaluate_ppl(&m.engine, &documents, &options, |n| progress.inc(n))?;
    progress.finish_and_clear();
    for d in &report.documents {
        println!(
            "{}: {} tokens, scored {}, perplexity {:.3}",
            d.path.display(),
            d.tokens,
            d.scored,
            d.perplexity
        );
    }
    println!(
        "{:>10} {:>10} {:>12} {:>10}",
        "positions", "", "predictions", "ppl"
    );
    for b in &report.buckets {
        println!(
            "{:>10} {:>10} {:>12} {:>10.3}",
            b.lo, b.hi, b.predictions, b.perplexity
        );
    }
    for a in &report.at_length {
        match a.perplexity {
            Some(p) => println!(
                "length {:>9}: perplexity {p:.3} over {} document(s)",
                a.length, a.documents
            ),
            None => println!("length {:>9}: no document is that long", a.length),
        }
        for (path, tokens) in &a.too_short {
            eprintln!(
                "warning: {} has {tokens} tokens, fewer than --lengths {}: left out of that length",
                path.display(),
                a.length
            );
        }
    }
    save(
        args.common.out.as_deref(),
        &meta("ppl", &m, &args.files, &args),
        &report,
    )?;
    if let Some(path) = &args.plot {
        draw(path, args.common.out.as_deref(), || {
            plot::plot_ppl(path, &report)
        })?;
    }
    Ok(())
}

fn passkey(args: PasskeyArgs) -> Result<()> {
    if args.depths == 0 || args.keys == 0 {
        bail!("--depths and --keys must be at least 1");
    }
    let m = load(&args.common)?;
    let options = PasskeyOptions {
        lengths: args.lengths.clone(),
        depths: args.depths,
        keys: args.keys,
        seed: args.seed,
        chunk: args.common.chunk as usize,
    };
    let progress = bar(
        (args.lengths.len() * args.depths * args.keys) as u64,
        "prompts",
    );
    let report = evaluate_passkey(&m.engine, &m.tokenizer, &options, || progress.inc(1))?;
    progress.finish_and_clear();
    print!("{:>10}", "length");
    report
        .depths
        .iter()
        .for_each(|d| print!(" {:>5.0}%", d * 100.0));
    println!("   mean  digits");
    for (i, row) in report.accuracy.iter().enumerate() {
        print!("{:>10}", report.lengths[i]);
        row.iter().for_each(|a| print!(" {:>6.2}", a));
        println!(
            " {:>6.2}  {:>6.2}",
            report.accuracy_by_length[i], report.digit_accuracy_by_length[i]
        );
    }
    save(
        args.common.out.as_deref(),
        &meta("passkey", &m, &[], &args),
        &report,
    )?;
    if let Some(path) = &args.heatmap {
        draw(path, args.common.out.as_deref(), || {
            plot::plot_passkey(path, &report)
        })?;
    }
    Ok(())
}

fn passkey_data(args: PasskeyDataArgs) -> Result<()> {
    let tokenizer = TextTokenizer::from_file(&args.tokenizer)?;
    let texts = passkey_training_texts(&tokenizer, args.length, args.count, args.seed)?;
    let mut out = String::new();
    for text in texts {
        out.push_str(&serde_json::to_string(
            &serde_json::json!({ "text": text }),
        )?);
        out.push('\n');
    }
    std::fs::write(&args.out, out).with_context(|| format!("--out {}", args.out.display()))?;
    eprintln!(
        "{} passkey documents of {} tokens: {}",
        args.count,
        args.length,
        args.out.display()
    );
    Ok(())
}

fn phonebook(args: PhonebookArgs) -> Result<()> {
    let m = load(&args.common)?;
    let options = PhonebookOptions {
        sizes: args.sizes.clone(),
        trials: args.trials,
        seed: args.seed,
        chunk: args.common.chunk as usize,
    };
    let progress = bar((args.sizes.len() * args.trials) as u64, "phone books");
    let report = evaluate_phonebook(&m.engine, &m.tokenizer, &options, || progress.inc(1))?;
    progress.finish_and_clear();
    for s in &report.sizes {
        println!(
            "size {:>6} (~{:.0} tokens): accuracy {:.3}",
            s.size, s.mean_tokens, s.accuracy
        );
    }
    save(
        args.common.out.as_deref(),
        &meta("phonebook", &m, &[], &args),
        &report,
    )?;
    if let Some(path) = &args.plot {
        draw(path, args.common.out.as_deref(), || {
            plot::plot_phonebook(path, &report)
        })?;
    }
    Ok(())
}

fn choice(args: ChoiceArgs) -> Result<()> {
    let m = load(&args.common)?;
    let tasks = args
        .tasks
        .iter()
        .map(|p| read_task(p))
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = tasks
        .iter()
        .map(|t| {
            args.limit
                .map_or(t.examples.len(), |l| l.min(t.examples.len()))
        })
        .sum();
    let progress = bar(total as u64, "examples");
    let chunk = args.common.chunk as usize;
    let report = evaluate_choice(&m.engine, &m.tokenizer, &tasks, args.limit, chunk, || {
        progress.inc(1)
    })?;
    progress.finish_and_clear();
    println!(
        "{:<32} {:>8} {:>7} {:>9} {:>7}",
        "task", "examples", "acc", "acc_norm", "chance"
    );
    for t in &report.tasks {
        println!(
            "{:<32} {:>8} {:>7.3} {:>9.3} {:>7.3}",
            t.name, t.examples, t.acc, t.acc_norm, t.chance
        );
    }
    println!(
        "{:<32} {:>8} {:>7.3} {:>9.3}",
        "mean", "", report.mean_acc, report.mean_acc_norm
    );
    save(
        args.common.out.as_deref(),
        &meta("choice", &m, &args.tasks, &args),
        &report,
    )
}
