//! `samba-lm generate`: text from a prompt, streamed as it is produced.
//!
//! Each prompt is prefilled chunk by chunk into its own recurrent state (memory independent of
//! the prompt's length), the states are stacked, and the batch decodes one token per step;
//! finished sequences leave the batch. On the CPU or a GPU (`--device`), the same way.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use samba_data::TextTokenizer;
use samba_generate::{
    GenerationStats, Sampler, SamplingConfig, StopStream, StopStrings, StopTokens,
};
use samba_model::checkpoint::load_model;
use samba_runtime::EngineState;
use serde::{Deserialize, Serialize};

use super::device::DeviceArgs;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "batch_file"])))]
pub struct GenerateArgs {
    /// The model folder (with its tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long, value_name = "STR")]
    pub prompt: Option<String>,
    /// A UTF-8 file holding the prompt (of any length).
    #[arg(long, value_name = "PATH")]
    pub prompt_file: Option<PathBuf>,
    /// JSON Lines, one {"prompt": "..."} per line: generated together as one batch; prints one
    /// JSON line {"prompt", "completion", "tokens", "stop"} per prompt.
    #[arg(long, value_name = "JSONL")]
    pub batch_file: Option<PathBuf>,
    /// Tokens to generate at most per prompt.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most probable tokens up to this cumulative probability, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Above 1 discourages tokens already in the prompt or output.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "STR")]
    pub stop: Vec<String>,
    /// Stop at this token id (repeatable); the tokenizer's end-of-document token always stops.
    #[arg(long = "stop-token", value_name = "ID")]
    pub stop_token: Vec<u32>,
    /// Prompt tokens per prefill pass.
    #[arg(long, default_value_t = 512)]
    pub chunk: usize,
    /// Positions a full-attention layer keeps (llama layout); other layouts need no cap. The
    /// state holds at most the longest prompt plus --max-tokens (on a GPU its key/value rings
    /// are allocated at that size).
    #[arg(long, default_value_t = 1 << 17)]
    pub max_context: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Deserialize)]
struct BatchLine {
    prompt: String,
}

#[derive(Serialize)]
struct BatchResult<'a> {
    prompt: &'a str,
    completion: String,
    tokens: usize,
    /// "stop-string", "stop-token" or "max-tokens".
    stop: &'static str,
}

fn read_utf8(path: &PathBuf, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("{what} {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn prompts(args: &GenerateArgs) -> Result<Vec<String>> {
    let prompts = if let Some(p) = &args.prompt {
        vec![p.clone()]
    } else if let Some(path) = &args.prompt_file {
        vec![read_utf8(path, "--prompt-file")?]
    } else if let Some(path) = &args.batch_file {
        let text = read_utf8(path, "--batch-file")?;
        let mut prompts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: BatchLine = serde_json::from_str(line).with_context(|| {
                format!(
                    "--batch-file {} line {}: expected {{\"prompt\": \"...\"}}",
                    path.display(),
                    i + 1
                )
            })?;
            prompts.push(parsed.prompt);
        }
        prompts
    } else {
        bail!("give --prompt, --prompt-file or --batch-file");
    };
    if prompts.is_empty() {
        bail!("no prompts to generate from");
    }
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        bail!(
            "prompt {} is empty: a prompt needs at least one token",
            i + 1
        );
    }
    Ok(prompts)
}

/// One sequence being generated.
struct Sequence {
    history: Vec<u32>,
    prompt_len: usize,
    stream: StopStream,
    /// Everything the tokenizer decodes the generated ids to.
    text: String,
    /// What has been released past the stop-string check.
    completion: String,
    done: Option<&'static str>,
}

impl Sequence {
    fn generated(&self) -> &[u32] {
        &self.history[self.prompt_len..]
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    // Every option is checked before any work.
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    sampling.validate()?;
    let stop_strings = StopStrings::new(args.stop.clone())?;
    anyhow::ensure!(args.chunk > 0, "--chunk must be at least 1");
    let prompts = prompts(&args)?;
    let loaded = load_model(&args.model)?;
    let Some(tokenizer_path) = loaded.tokenizer.clone() else {
        bail!(
            "{}: the model folder has no tokenizer.json, so prompts cannot be tokenized",
            args.model.display()
        );
    };
    let tokenizer = TextTokenizer::from_file(&tokenizer_path)?;
    let vocab = loaded.config.vocab;
    if tokenizer.vocab_size() > vocab {
        bail!(
            "{}: the tokenizer has {} tokens but the model only {vocab}",
            tokenizer_path.display(),
            tokenizer.vocab_size(),
        );
    }
    let stop_tokens = StopTokens::new(args.stop_token.iter().copied().chain([tokenizer.eos_id()]));
    let mut sampler = Sampler::new(sampling)?;
    let streaming = prompts.len() == 1;
    let mut prompt_ids = Vec::new();
    for prompt in &prompts {
        let ids = tokenizer.encode(prompt)?;
        if ids.is_empty() {
            bail!("a prompt encodes to no tokens");
        }
        samba_cpu::error::check_tokens("prompt", &ids, 1, ids.len(), vocab)?;
        prompt_ids.push(ids);
    }
    // Every state gets the same cap (stacked states share it), no more than the longest
    // sequence needs.
    let longest = prompt_ids.iter().map(Vec::len).max().unwrap_or(0);
    let max_context = args.max_context.min(longest + args.max_tokens);
    let engine = args.device.engine(loaded)?;

    // Prefill every prompt into its own state.
    let start = Instant::now();
    let mut states = Vec::new();
    let mut sequences = Vec::new();
    let mut next_logits = Vec::new();
    for ids in prompt_ids {
        let mut state = engine.new_state(1, max_context)?;
        next_logits.push(engine.prefill(&mut state, &ids, args.chunk)?);
        states.push(state);
        sequences.push(Sequence {
            prompt_len: ids.len(),
            history: ids,
            stream: StopStream::new(stop_strings.clone()),
            text: String::new(),
            completion: String::new(),
            done: None,
        });
    }
    let mut stats = GenerationStats {
        prompt_tokens: sequences.iter().map(|s| s.prompt_len).sum(),
        prompt_seconds: start.elapsed().as_secs_f64(),
        generated_tokens: 0,
        generation_seconds: 0.0,
    };

    // Decode: one token for every unfinished sequence per step.
    let start = Instant::now();
    let mut state = EngineState::stack(&engine, states)?;
    let mut active: Vec<usize> = (0..sequences.len()).collect();
    let mut stdout = std::io::stdout().lock();
    while !active.is_empty() {
        let mut step_tokens = Vec::with_capacity(active.len());
        for (row, &i) in active.iter().enumerate() {
            let seq = &mut sequences[i];
            let token = sampler.sample(&next_logits[row], &seq.history)?;
            seq.history.push(token);
            stats.generated_tokens += 1;
            step_tokens.push(token);
            if stop_tokens.contains(token) {
                seq.done = Some("stop-token");
                continue;
            }
            let text = tokenizer.decode(seq.generated())?;
            // Emit only complete characters: a byte-level token can end inside one.
            if !text.ends_with('\u{fffd}')
                && text.len() > seq.text.len()
                && text.starts_with(&seq.text)
            {
                let step = seq.stream.push(&text[seq.text.len()..]);
                seq.completion.push_str(step.emit);
                if streaming {
                    write!(stdout, "{}", step.emit)?;
                    stdout.flush()?;
                }
                if step.stopped.is_some() {
                    seq.done = Some("stop-string");
                }
                seq.text = text;
            }
            if seq.done.is_none() && seq.generated().len() >= args.max_tokens {
                seq.done = Some("max-tokens");
            }
        }
        // Keep the rows still generating, then run them one step.
        let keep: Vec<usize> = (0..active.len())
            .filter(|&r| sequences[active[r]].done.is_none())
            .collect();
        if keep.len() < active.len() {
            state.select(&engine, &keep)?;
            step_tokens = keep.iter().map(|&r| step_tokens[r]).collect();
            active = keep.iter().map(|&r| active[r]).collect();
        }
        if active.is_empty() {
            break;
        }
        // The step's activations (on a GPU its CUDA graph) are re-planned only when a sequence
        // finishes and the batch shrinks.
        let logits = engine.step(&mut state, &step_tokens)?;
        next_logits = logits.chunks(vocab).map(<[f32]>::to_vec).collect();
    }
    stats.generation_seconds = start.elapsed().as_secs_f64();

    // Release what was held back as a possible start of a stop string.
    for seq in &mut sequences {
        if seq.done != Some("stop-string") {
            let tail = seq.stream.finish().to_string();
            if streaming {
                write!(stdout, "{tail}")?;
            }
            seq.completion.push_str(&tail);
        }
    }
    if streaming {
        writeln!(stdout)?;
    } else {
        for (prompt, seq) in prompts.iter().zip(&sequences) {
            let line = BatchResult {
                prompt,
                completion: seq.completion.clone(),
                tokens: seq.generated().len(),
                stop: seq.done.unwrap_or("max-tokens"),
            };
            writeln!(stdout, "{}", serde_json::to_string(&line)?)?;
        }
    }
    eprintln!("{stats}");
    if let Some(note) = state.decode_step_note() {
        eprintln!("decoding step: {note}");
    }
    Ok(())
}
