//! `samba-lm convert`: a model folder's weights in another storage type (f32, bf16, f16), e.g.
//! a trained f32 checkpoint as a bf16 folder half its size for inference on a GPU.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use samba_model::checkpoint::{load_model, save_model, SaveDtype};

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The model folder to read (config.json, model.safetensors, optional tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Storage type of the new model.safetensors: f32, bf16 or f16.
    #[arg(long)]
    pub dtype: String,
    /// The model folder to create (must not exist, or be empty); the tokenizer comes along.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: ConvertArgs) -> Result<()> {
    let dtype = SaveDtype::from_name(&args.dtype)
        .with_context(|| format!("--dtype '{}': expected f32, bf16 or f16", args.dtype))?;
    if args.out == args.model {
        bail!(
            "--out {} is the input folder: write the converted model to a new folder",
            args.out.display()
        );
    }
    let loaded = load_model(&args.model)?;
    save_model(
        &args.out,
        &loaded.config,
        &loaded.layout,
        &loaded.params,
        dtype,
        loaded.tokenizer.as_deref(),
    )?;
    println!(
        "wrote {} ({} parameters as {}) to {}",
        args.model.display(),
        loaded.layout.numel,
        args.dtype,
        args.out.display()
    );
    Ok(())
}
