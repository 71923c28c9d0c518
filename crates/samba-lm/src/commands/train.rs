//! `samba-lm train`: train a model on a prepared data folder, resumably, into a run folder.
//!
//!   samba-lm train --preset tiny --data DATA --out RUN --steps 2000
//!   samba-lm train --preset tiny --data DATA --out RUN --steps 2000 --resume   (after Ctrl-C)
//!
//! The run folder holds `metrics.jsonl` (see `samba-lm plot`) and `checkpoints/step-NNNNNN/`,
//! each with a `model/` folder every other command loads.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use samba_cpu::CpuModel;
use samba_data::DataIndex;
use samba_model::checkpoint::load_model;
use samba_model::init::{init_params, DEFAULT_SEED};
use samba_model::{Config, ParamLayout};
use samba_train::checkpoint::{latest_checkpoint, MODEL_DIR};
use samba_train::interrupt::install_stop_handler;
use samba_train::{
    AdamWConfig, CpuTrainBackend, ShardValidation, ShardWindows, StopReason, TrainOptions, Trainer,
};

use super::config_args::ConfigArgs;

// --preset is required by `init` but not here (--model, or --resume alone, give the model).
#[derive(Args, Debug)]
#[command(mut_arg("preset", |a| a.required(false)))]
pub struct TrainArgs {
    /// Start from this model folder (config.json + model.safetensors) instead of a preset.
    #[arg(long, value_name = "DIR", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    /// A fresh model: --preset NAME and any shape flag.
    #[command(flatten)]
    pub config: Option<ConfigArgs>,
    /// Seed of a fresh model's initialization.
    #[arg(long, default_value_t = DEFAULT_SEED, value_name = "SEED")]
    pub init_seed: u64,
    /// The data folder `samba-lm data prepare` wrote (index.json + token shards).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The run folder: checkpoints/ and metrics.jsonl go here.
    #[arg(long, value_name = "RUN")]
    pub out: PathBuf,
    /// Continue the run in --out from its latest checkpoint, exactly where it stopped.
    #[arg(long)]
    pub resume: bool,

    /// Optimizer steps.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Training length in tokens (the paper: 4096).
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Tokens per optimizer step, reached by gradient accumulation (the paper: 2M);
    /// default: one micro-batch.
    #[arg(long, value_name = "TOKENS")]
    pub batch_tokens: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8, value_name = "WINDOWS")]
    pub micro_batch: usize,
    /// Peak learning rate (the paper: 4e-4).
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    /// Linear warmup steps (default: 1% of --steps).
    #[arg(long, value_name = "STEPS")]
    pub warmup: Option<u64>,
    /// Final learning rate as a fraction of the peak.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO")]
    pub min_lr_ratio: f64,
    /// AdamW weight decay, applied to every parameter as the reference does.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Checkpoint every N steps (and at the end; 0: only at the end).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub save_every: u64,
    /// Validate every N steps (and at the end; 0: never).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub eval_every: u64,
    /// Held-out windows of 4x --seq-len per validation.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub eval_windows: usize,
    /// Checkpoints to keep (the newest).
    #[arg(long, default_value_t = 3, value_name = "K")]
    pub keep_last: usize,
    /// Seed of the data order.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Stop after this many non-finite steps in a row.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_bad_steps: u32,
    /// Peak TFLOP/s of the hardware, for the utilisation (MFU) estimate.
    #[arg(long, value_name = "TFLOPS")]
    pub peak_tflops: Option<f64>,
    /// No progress bar (messages still go to stderr).
    #[arg(long)]
    pub no_progress: bool,
    /// Where training runs: auto or cpu. Training runs on the CPU only for now (the GPU's
    /// backward kernels are not written yet), so auto is the CPU.
    #[arg(long, default_value = "auto", value_name = "auto|cpu")]
    pub device: String,
}

impl TrainArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            steps: self.steps,
            seq_len: self.seq_len,
            batch_tokens: self.batch_tokens.unwrap_or(self.seq_len * self.micro_batch),
            micro_batch: self.micro_batch,
            lr: self.lr,
            warmup: self.warmup,
            min_lr_ratio: self.min_lr_ratio,
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            clip: self.clip,
            save_every: self.save_every,
            eval_every: self.eval_every,
            eval_windows: self.eval_windows,
            keep_last: self.keep_last,
            seed: self.seed,
            max_bad_steps: self.max_bad_steps,
            peak_flops: self.peak_tflops.map(|t| t * 1e12),
        }
    }
}

/// The model to train: a model folder, a preset with shape flags, or (resuming) the one in the
/// latest checkpoint. A preset's vocabulary follows the data's tokenizer unless --vocab is given.
fn model(args: &TrainArgs, index: &DataIndex) -> Result<CpuModel> {
    let vocab = index.tokenizer.vocab_size;
    let model = if let Some(dir) = &args.model {
        CpuModel::from_loaded(load_model(dir)?)
    } else if let Some(config_args) = &args.config {
        let mut config: Config = config_args.to_config()?;
        if config_args.vocab.is_none() {
            config.vocab = vocab;
            config
                .validate()
                .context("the model with the data's vocabulary is not valid")?;
        }
        let params = init_params(&ParamLayout::new(&config), args.init_seed);
        CpuModel::new(config, params)
    } else if let Some(dir) = latest_checkpoint(&args.out)?.filter(|_| args.resume) {
        CpuModel::from_loaded(
            load_model(&dir.join(MODEL_DIR))
                .with_context(|| format!("loading the model of {}", dir.display()))?,
        )
    } else {
        bail!("give the model to train: --model DIR or --preset NAME (with --resume, the run's own checkpoint is used)");
    };
    if model.config.vocab < vocab {
        bail!(
            "the model has {} tokens but the data's tokenizer has {vocab}: give --vocab {vocab} or more",
            model.config.vocab
        );
    }
    Ok(model)
}

/// Training runs on the CPU only for now: `cuda` is refused, `auto` notes a GPU it cannot use.
fn check_device(spec: &str) -> Result<()> {
    match spec {
        "cpu" => Ok(()),
        "auto" => {
            if samba_cuda::cuda_available() {
                eprintln!("note: a GPU is present, but training runs on the CPU for now (GPU training is not implemented yet: its backward kernels are not written)");
            }
            Ok(())
        }
        "cuda" => bail!("--device cuda: training runs on the CPU only for now (the GPU's backward kernels are not written yet); use --device cpu or auto"),
        s if s.starts_with("cuda:") => bail!("--device {s}: training runs on the CPU only for now (the GPU's backward kernels are not written yet); use --device cpu or auto"),
        s => bail!("--device '{s}': training takes auto or cpu"),
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    check_device(&args.device)?;
    let index =
        DataIndex::load(&args.data).with_context(|| format!("--data {}", args.data.display()))?;
    let options = args.options();
    let model = model(&args, &index)?;
    let (n_params, config_summary) = (
        model.layout.numel,
        format!(
            "{} layout, {} blocks, d_model {}",
            model.config.layout, model.config.n_layer, model.config.d_model
        ),
    );
    let backend = CpuTrainBackend::new(model);
    let source = ShardWindows::open(&args.data, options.seq_len, options.seed)
        .with_context(|| format!("--data {}", args.data.display()))?;
    let mut trainer = if args.resume {
        Trainer::resume(&args.out, options.clone(), backend, source)?
    } else {
        Trainer::new(&args.out, options.clone(), backend, source)?
    };
    if options.eval_every > 0 {
        let mut validation = ShardValidation::new(&args.data);
        if let Err(e) = trainer.set_validation(&mut validation) {
            eprintln!("warning: no validation this run: {e}");
        }
    }
    let tokenizer = Some(index.tokenizer.path.clone()).filter(|p| p.is_file());
    trainer.set_tokenizer(tokenizer);
    trainer.set_stop_flag(install_stop_handler()?);
    trainer.set_progress(!args.no_progress);

    eprintln!(
        "training {n_params} parameters ({config_summary}) for {} steps of {} tokens ({} x {} windows of {}), into {}",
        options.steps,
        options.batch_tokens,
        options.accumulation(),
        options.micro_batch,
        options.seq_len,
        args.out.display()
    );
    let outcome = trainer.run()?;
    let checkpoint = outcome
        .last_checkpoint
        .as_ref()
        .map_or("(none)".to_string(), |d| d.display().to_string());
    if let Some(val) = &outcome.last_validation {
        for r in val {
            println!(
                "validation at {} tokens: loss {:.4}, perplexity {:.3}",
                r.seq_len, r.loss, r.perplexity
            );
        }
    }
    match outcome.reason {
        StopReason::Finished => {
            println!(
                "done: {} steps, {} tokens, final loss {}; model folder {}/{MODEL_DIR}; metrics in {}",
                outcome.step,
                outcome.tokens_seen,
                outcome
                    .last_loss
                    .map_or("n/a".to_string(), |l| format!("{l:.4}")),
                checkpoint,
                args.out.join(samba_train::metrics::METRICS_FILE).display()
            );
            Ok(())
        }
        StopReason::Interrupted => {
            println!(
                "stopped at step {}: saved {checkpoint}; run the same command with --resume to continue",
                outcome.step
            );
            Ok(())
        }
        StopReason::TooManyBadSteps => bail!(
            "stopped at step {} after {} non-finite steps in a row (lower --lr, or check the data); the last good checkpoint is {checkpoint}",
            outcome.step,
            options.max_bad_steps
        ),
    }
}
