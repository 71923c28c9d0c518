//! One file per subcommand: its clap arguments and its `run`.

pub mod bench;
pub mod config_args;
pub mod convert;
pub mod data;
pub mod device;
pub mod eval;
pub mod generate;
pub mod info;
pub mod init;
pub mod plot;
pub mod score;
pub mod text;
pub mod tokenizer;
pub mod train;
