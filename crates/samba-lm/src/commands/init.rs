//! `samba-lm init`: a randomly initialized model folder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use samba_model::checkpoint::{save_model, SaveDtype};
use samba_model::init::{init_params, DEFAULT_SEED};
use samba_model::ParamLayout;

use super::config_args::ConfigArgs;

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seed of the initialization (the reference uses 3407).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Storage type of model.safetensors: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// A tokenizer.json to copy into the folder.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// The model folder to create (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: InitArgs) -> Result<()> {
    let config = args.config.to_config()?;
    let dtype = SaveDtype::from_name(&args.dtype)
        .with_context(|| format!("--dtype '{}': expected f32, bf16 or f16", args.dtype))?;
    if let Some(tok) = &args.tokenizer {
        anyhow::ensure!(tok.is_file(), "--tokenizer {}: no such file", tok.display());
    }
    let layout = ParamLayout::new(&config);
    let params = init_params(&layout, args.seed);
    save_model(
        &args.out,
        &config,
        &layout,
        &params,
        dtype,
        args.tokenizer.as_deref(),
    )?;
    println!(
        "wrote {} ({} layout, {} parameters, {} blocks, seed {}) to {}",
        args.config.preset,
        config.layout,
        layout.numel,
        config.n_layer,
        args.seed,
        args.out.display()
    );
    Ok(())
}
