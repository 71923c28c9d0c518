//! The training loop. One optimizer step:
//!
//!   lr    = schedule(step)
//!   grads = sum over the A micro-batches of (1/A) * d mean-loss(micro-batch) / d params
//!   norm  = |grads|_2;  skip the step if the loss or the norm is not finite
//!   AdamW(params, grads * min(1, clip / (norm + 1e-6)), lr)
//!
//! then metrics, validation every `eval_every` steps and a checkpoint every `save_every`
//! steps and at the end. A stop request (Ctrl-C, SIGTERM) is honoured between steps with a
//! checkpoint. Everything the next step depends on — parameters, moments, step counters, the
//! data position and the random stream — is in a checkpoint, so a resumed run continues
//! exactly where the saved one was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand_chacha::ChaCha8Rng;
use samba_cpu::BatchShape;
use samba_model::flops::forward_flops_per_token;

use crate::adamw::{clip_scale, AdamWStep};
use crate::backend::TrainBackend;
use crate::batches::{BatchSource, ValidationSource};
use crate::checkpoint::{list_checkpoints, load_latest, save_checkpoint, RngState, TrainerState};
use crate::error::{Result, TrainError};
use crate::metrics::{mfu, MetricsLog, Record, ValResult};
use crate::options::TrainOptions;

/// Validation lengths, as multiples of the training length (the paper's 4K / 8K / 16K at 4K).
pub const VAL_MULTIPLES: [usize; 3] = [1, 2, 4];

/// Why [`Trainer::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All steps done; a final checkpoint was written.
    Finished,
    /// A stop was requested; a checkpoint of the last completed step was written.
    Interrupted,
    /// `max_bad_steps` non-finite steps in a row; the last good checkpoint was left as it was.
    TooManyBadSteps,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub reason: StopReason,
    /// Steps completed.
    pub step: u64,
    pub tokens_seen: u64,
    pub skipped_steps: u64,
    /// The newest checkpoint of the run, if any.
    pub last_checkpoint: Option<PathBuf>,
    /// The last validation, if any.
    pub last_validation: Option<Vec<ValResult>>,
    /// Mean training loss of the last step that was not skipped.
    pub last_loss: Option<f64>,
}

/// A training run over a backend and a batch source, writing into a run folder.
pub struct Trainer<B: TrainBackend, S: BatchSource> {
    run: PathBuf,
    options: TrainOptions,
    backend: B,
    source: S,
    state: TrainerState,
    rng: ChaCha8Rng,
    /// [count, 4 * seq_len + 1] held-out windows, read once.
    val_windows: Option<Vec<u32>>,
    stop: Option<Arc<AtomicBool>>,
    progress: bool,
    notes: Vec<String>,
    /// A tokenizer.json copied into every checkpoint's model folder.
    tokenizer: Option<PathBuf>,
}

fn rng_state(rng: &ChaCha8Rng, seed: u64) -> RngState {
    RngState {
        seed,
        word_pos: rng.get_word_pos().to_string(),
    }
}

impl<B: TrainBackend, S: BatchSource> Trainer<B, S> {
    /// Starts a new run in `run` from the backend's current parameters. Refuses a folder that
    /// already holds checkpoints (resume it, or choose another folder).
    pub fn new(run: &Path, options: TrainOptions, backend: B, source: S) -> Result<Self> {
        options.validate()?;
        if let Some((step, _)) = list_checkpoints(run)?.last() {
            return Err(TrainError::RunExists {
                run: run.display().to_string(),
                why: format!(
                    "the folder already holds a run (checkpoints up to step {step}); add --resume to continue it or choose another --out"
                ),
            });
        }
        Self::start(run, options, backend, source)
    }

    fn start(run: &Path, options: TrainOptions, backend: B, source: S) -> Result<Self> {
        if source.seq_len() != options.seq_len {
            return Err(TrainError::Options(format!(
                "the data gives windows of {} tokens, the options say --seq-len {}",
                source.seq_len(),
                options.seq_len
            )));
        }
        std::fs::create_dir_all(run).map_err(|e| crate::error::io_error(run, e))?;
        use rand::SeedableRng;
        let rng = ChaCha8Rng::seed_from_u64(options.seed);
        let state = TrainerState::new(
            options.clone(),
            source.position(),
            rng_state(&rng, options.seed),
        );
        Ok(Trainer {
            run: run.to_path_buf(),
            options,
            backend,
            source,
            state,
            rng,
            val_windows: None,
            stop: None,
            progress: false,
            notes: Vec::new(),
            tokenizer: None,
        })
    }

    /// Continues the run in `run` from its newest usable checkpoint: parameters, moments, step
    /// counters, data position and random stream. `options` may change the length of the run
    /// and its bookkeeping, nothing that would change the result. With no checkpoint yet the
    /// run starts from the beginning.
    pub fn resume(
        run: &Path,
        options: TrainOptions,
        mut backend: B,
        mut source: S,
    ) -> Result<Self> {
        options.validate()?;
        let Some((checkpoint, warnings)) = load_latest(run)? else {
            let mut t = Self::start(run, options, backend, source)?;
            t.notes
                .push("no checkpoint to resume from yet: starting from step 0".to_string());
            return Ok(t);
        };
        let resume_error = |why: String| TrainError::Resume {
            run: run.display().to_string(),
            why,
        };
        if &checkpoint.config != backend.config() {
            return Err(resume_error(format!(
                "{} holds a model of another shape than the one given (train with the same --model/--preset flags, or without them)",
                checkpoint.dir.display()
            )));
        }
        let conflicts = options.resume_conflicts(&checkpoint.state.options);
        if !conflicts.is_empty() {
            return Err(resume_error(format!(
                "the options differ from the run's: {}",
                conflicts.join("; ")
            )));
        }
        backend.set_params(&checkpoint.params)?;
        backend.load_optimizer_state(&checkpoint.m, &checkpoint.v)?;
        source.restore(&checkpoint.state.data_position)?;
        let mut rng = {
            use rand::SeedableRng;
            ChaCha8Rng::seed_from_u64(checkpoint.state.rng.seed)
        };
        let word_pos: u128 = checkpoint.state.rng.word_pos.parse().map_err(|e| {
            resume_error(format!(
                "trainer.json: rng.word_pos '{}': {e}",
                checkpoint.state.rng.word_pos
            ))
        })?;
        rng.set_word_pos(word_pos);
        let mut state = checkpoint.state;
        let mut notes = warnings;
        if state.options.steps != options.steps {
            notes.push(format!(
                "--steps changed from {} to {}: the cosine schedule follows the new length",
                state.options.steps, options.steps
            ));
        }
        state.options = options.clone();
        notes.push(format!(
            "resuming from {} (step {}, {} tokens seen)",
            checkpoint.dir.display(),
            state.step,
            state.tokens_seen
        ));
        Ok(Trainer {
            run: run.to_path_buf(),
            options,
            backend,
            source,
            state,
            rng,
            val_windows: None,
            stop: None,
            progress: false,
            notes,
            tokenizer: None,
        })
    }

    /// Reads the held-out windows validation will use (once: the same windows every time).
    pub fn set_validation(&mut self, validation: &mut dyn ValidationSource) -> Result<()> {
        let longest = self.options.seq_len * VAL_MULTIPLES[VAL_MULTIPLES.len() - 1];
        self.val_windows = Some(validation.windows(longest, self.options.eval_windows)?);
        Ok(())
    }

    /// A flag that, once set, stops the run after the current step with a checkpoint.
    pub fn set_stop_flag(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    /// Copies this tokenizer.json into every checkpoint's model folder, so each one is a model
    /// folder that generation and scoring can use as it is.
    pub fn set_tokenizer(&mut self, tokenizer: Option<PathBuf>) {
        self.tokenizer = tokenizer;
    }

    /// Shows a progress bar on the terminal (off by default).
    pub fn set_progress(&mut self, on: bool) {
        self.progress = on;
    }

    /// Messages from setting up the run (what it resumed from, checkpoints it passed over).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn into_backend(self) -> B {
        self.backend
    }

    fn save(&mut self) -> Result<PathBuf> {
        self.state.data_position = self.source.position();
        self.state.rng = rng_state(&self.rng, self.state.rng.seed);
        let params = self.backend.params();
        let (m, v) = self.backend.optimizer_state();
        save_checkpoint(
            &self.run,
            &self.state,
            self.backend.config(),
            &params,
            (&m, &v),
            self.tokenizer.as_deref(),
            self.options.keep_last,
        )
    }

    /// Mean loss and perplexity on the held-out windows at each of [`VAL_MULTIPLES`] x seq_len.
    /// Every length reads the same tokens: a window of 4 x seq_len + 1 is cut into 4 windows at
    /// 1x and 2 at 2x, so the lengths differ only in how much context each token has.
    pub fn validate(&mut self) -> Result<Option<Vec<ValResult>>> {
        let Some(windows) = &self.val_windows else {
            return Ok(None);
        };
        let seq = self.options.seq_len;
        let longest = seq * VAL_MULTIPLES[VAL_MULTIPLES.len() - 1];
        let mut results = Vec::new();
        for k in VAL_MULTIPLES {
            let len = seq * k;
            let shape = BatchShape { batch: 1, seq: len };
            let (mut sum, mut count) = (0.0f64, 0usize);
            for window in windows.chunks_exact(longest + 1) {
                for part in 0..longest / len {
                    let w = &window[part * len..part * len + len + 1];
                    sum += self.backend.evaluate(&w[..len], &w[1..], shape)? as f64;
                    count += 1;
                }
            }
            let loss = sum / count.max(1) as f64;
            results.push(ValResult {
                seq_len: len,
                loss,
                perplexity: loss.exp(),
            });
        }
        Ok(Some(results))
    }

    /// Trains until the last step, a stop request or too many non-finite steps in a row.
    pub fn run(&mut self) -> Result<TrainOutcome> {
        let o = self.options.clone();
        let schedule = o.schedule();
        let accumulation = o.accumulation();
        let (l, mb) = (o.seq_len, o.micro_batch);
        let shape = BatchShape { batch: mb, seq: l };
        let step_tokens = (o.batch_windows() * l) as u64;
        let flops_per_token = forward_flops_per_token(self.backend.config(), l);
        let mut metrics = MetricsLog::open(&self.run, self.state.step)?;
        let bar = self.progress_bar(o.steps);
        for note in std::mem::take(&mut self.notes) {
            say(&bar, note);
        }

        // [micro_batch, seq + 1] windows, split into inputs and targets [micro_batch, seq].
        let mut windows = vec![0u32; mb * (l + 1)];
        let mut inputs = vec![0u32; mb * l];
        let mut targets = vec![0u32; mb * l];
        let started = Instant::now();
        let mut last_checkpoint = list_checkpoints(&self.run)?.last().map(|(_, d)| d.clone());
        let mut saved_at = last_checkpoint.as_ref().map(|_| self.state.step);
        let mut last_validation = None;
        let mut last_loss = None;
        let mut reason = StopReason::Finished;

        while self.state.step < o.steps {
            if self.stop.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) {
                reason = StopReason::Interrupted;
                break;
            }
            let step_start = Instant::now();
            let lr = schedule.lr(self.state.step);
            self.backend.zero_grads();
            let mut loss_sum = 0.0f64;
            for _ in 0..accumulation {
                self.source.next_windows(&mut windows)?;
                for (row, w) in windows.chunks_exact(l + 1).enumerate() {
                    inputs[row * l..(row + 1) * l].copy_from_slice(&w[..l]);
                    targets[row * l..(row + 1) * l].copy_from_slice(&w[1..]);
                }
                let weight = 1.0 / accumulation as f32;
                loss_sum += self.backend.accumulate(&inputs, &targets, shape, weight)? as f64;
            }
            let loss = loss_sum / accumulation as f64;
            let norm = self.backend.grad_norm();
            self.state.step += 1;
            self.state.tokens_seen += step_tokens;
            let step = self.state.step;

            if !loss.is_finite() || !norm.is_finite() {
                self.state.skipped_steps += 1;
                self.state.bad_in_a_row += 1;
                let why = format!(
                    "step {step}: non-finite {} (loss {loss}, gradient norm {norm}); skipped without an update ({} in a row, the run stops at {})",
                    if loss.is_finite() { "gradient" } else { "loss" },
                    self.state.bad_in_a_row,
                    o.max_bad_steps
                );
                say(&bar, format!("warning: {why}"));
                metrics.append(&Record::Skipped {
                    step,
                    loss: loss.is_finite().then_some(loss),
                    grad_norm: norm.is_finite().then_some(norm as f64),
                    reason: why,
                })?;
                bar.set_position(step);
                if self.state.bad_in_a_row >= o.max_bad_steps {
                    reason = StopReason::TooManyBadSteps;
                    say(&bar, format!(
                        "error: {} non-finite steps in a row: stopping; the last good checkpoint is {}",
                        self.state.bad_in_a_row,
                        last_checkpoint
                            .as_ref()
                            .map_or("(none)".to_string(), |d| d.display().to_string())
                    ));
                    break;
                }
                continue;
            }

            self.state.bad_in_a_row = 0;
            self.state.optimizer_steps += 1;
            self.backend.adamw_step(&AdamWStep {
                config: o.adamw,
                lr,
                t: self.state.optimizer_steps,
                grad_scale: clip_scale(norm, o.clip),
            });
            last_loss = Some(loss);
            let seconds = step_start.elapsed().as_secs_f64().max(1e-9);
            let tokens_per_second = step_tokens as f64 / seconds;
            metrics.append(&Record::Train {
                step,
                loss,
                lr,
                grad_norm: norm as f64,
                tokens: self.state.tokens_seen,
                tokens_per_second,
                mfu: o
                    .peak_flops
                    .map(|peak| mfu(flops_per_token, tokens_per_second, peak)),
                elapsed_s: started.elapsed().as_secs_f64(),
            })?;
            bar.set_position(step);
            bar.set_message(format!(
                "loss {loss:.4}  lr {lr:.2e}  |g| {norm:.3}  {:.0} tok/s",
                tokens_per_second
            ));

            let last = step == o.steps;
            if o.eval_every > 0 && (step % o.eval_every == 0 || last) {
                if let Some(results) = self.validate()? {
                    let line = results
                        .iter()
                        .map(|r| format!("ppl@{} {:.3}", r.seq_len, r.perplexity))
                        .collect::<Vec<_>>()
                        .join("  ");
                    say(&bar, format!("step {step}: validation {line}"));
                    metrics.append(&Record::Val {
                        step,
                        results: results.clone(),
                    })?;
                    last_validation = Some(results);
                }
            }
            if (o.save_every > 0 && step % o.save_every == 0) || last {
                last_checkpoint = Some(self.save()?);
                saved_at = Some(step);
            }
        }

        if reason == StopReason::Interrupted && saved_at != Some(self.state.step) {
            let dir = self.save()?;
            say(&bar, format!("interrupted: saved {}", dir.display()));
            last_checkpoint = Some(dir);
        }
        // A resumed run that had nothing left to do still ends with its final checkpoint.
        if reason == StopReason::Finished && saved_at != Some(self.state.step) {
            last_checkpoint = Some(self.save()?);
        }
        bar.finish_and_clear();
        Ok(TrainOutcome {
            reason,
            step: self.state.step,
            tokens_seen: self.state.tokens_seen,
            skipped_steps: self.state.skipped_steps,
            last_checkpoint,
            last_validation,
            last_loss,
        })
    }

    fn progress_bar(&self, steps: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} steps, ETA {eta_precise}  {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_position(self.state.step);
        bar.reset_eta();
        bar
    }
}

/// Prints above the progress bar, or to stderr when there is no bar (a hidden bar prints
/// nothing).
fn say(bar: &ProgressBar, message: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", message.as_ref());
    } else {
        bar.println(message.as_ref());
    }
}
