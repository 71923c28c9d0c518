//! placeholder
pub struct CpuModel;
pub struct Activations;
