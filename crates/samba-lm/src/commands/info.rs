//! `samba-lm info`: a model's or preset's configuration and parameter count.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use samba_model::checkpoint::load_config;
use samba_model::ParamLayout;

use super::config_args::ConfigArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// A model folder.
    #[arg(long, value_name = "DIR", conflicts_with = "preset")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub config: Option<ConfigArgs>,
    /// Also list every tensor with its shape.
    #[arg(long)]
    pub tensors: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let config = match (&args.model, &args.config) {
        (Some(dir), _) => load_config(dir)?,
        (None, Some(c)) => c.to_config()?,
        (None, None) => bail!("give --model DIR or --preset NAME"),
    };
    let layout = ParamLayout::new(&config);
    println!("{}", config.to_json());
    println!("parameters: {}", layout.numel);
    if args.tensors {
        for t in &layout.tensors {
            println!("{:<48} {:?}", t.name, t.shape);
        }
    }
    Ok(())
}
