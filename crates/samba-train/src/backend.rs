//! What the training loop asks of a backend: forward + backward into one flat gradient buffer,
//! the gradient norm, one fused AdamW step, and host copies of the parameters and moments for
//! checkpoints. [`CpuTrainBackend`] implements it with `samba_cpu::CpuModel`; the GPU backend
//! implements the same trait over device buffers, reading back only the loss and the norm.

use samba_cpu::{Activations, BatchShape, CpuModel};
use samba_model::Config;

use crate::adamw::{adamw_update, global_norm, AdamWStep};
use crate::error::{Result, TrainError};

/// A model that can be trained: parameters, gradients and AdamW moments, each one flat buffer
/// laid out by `samba_model::ParamLayout`.
pub trait TrainBackend {
    fn config(&self) -> &Config;

    /// Sets every gradient to 0 (the start of an optimizer step).
    fn zero_grads(&mut self);

    /// Forward and backward over `inputs`, `targets` [batch, seq]: adds
    /// `weight * d mean-loss / d params` into the gradients and returns the mean loss.
    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        shape: BatchShape,
        weight: f32,
    ) -> Result<f32>;

    /// The mean loss over `inputs`, `targets` [batch, seq], without touching the gradients.
    fn evaluate(&mut self, inputs: &[u32], targets: &[u32], shape: BatchShape) -> Result<f32>;

    /// The L2 norm of the whole gradient buffer.
    fn grad_norm(&mut self) -> f32;

    /// One AdamW update of every parameter from the gradients times `step.grad_scale`.
    fn adamw_step(&mut self, step: &AdamWStep);

    /// A host copy of the parameters.
    fn params(&self) -> Vec<f32>;
    fn set_params(&mut self, params: &[f32]) -> Result<()>;

    /// Host copies of the AdamW moments (m, v).
    fn optimizer_state(&self) -> (Vec<f32>, Vec<f32>);
    fn load_optimizer_state(&mut self, m: &[f32], v: &[f32]) -> Result<()>;
}

/// Training on the CPU: a [`CpuModel`] plus gradients and moments, and activations allocated
/// once per batch shape and kept.
pub struct CpuTrainBackend {
    pub model: CpuModel,
    grads: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Gradients of one micro-batch before weighting; allocated on the first weight != 1.
    scratch: Vec<f32>,
    /// Activations per shape used so far (the training shape and each validation length).
    acts: Vec<Activations>,
}

impl CpuTrainBackend {
    pub fn new(model: CpuModel) -> CpuTrainBackend {
        let n = model.layout.numel;
        CpuTrainBackend {
            model,
            grads: vec![0.0; n],
            m: vec![0.0; n],
            v: vec![0.0; n],
            scratch: Vec::new(),
            acts: Vec::new(),
        }
    }

    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    fn acts_index(&mut self, shape: BatchShape) -> usize {
        match self.acts.iter().position(|a| a.shape == shape) {
            Some(i) => i,
            None => {
                self.acts.push(self.model.activations(shape));
                self.acts.len() - 1
            }
        }
    }

    fn check_len(&self, what: &str, found: usize) -> Result<()> {
        let n = self.model.layout.numel;
        if found != n {
            return Err(TrainError::Backend(format!(
                "{what} holds {found} values, the model has {n} parameters"
            )));
        }
        Ok(())
    }
}

impl TrainBackend for CpuTrainBackend {
    fn config(&self) -> &Config {
        &self.model.config
    }

    fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        shape: BatchShape,
        weight: f32,
    ) -> Result<f32> {
        let i = self.acts_index(shape);
        let acts = &mut self.acts[i];
        self.model.forward(acts, inputs)?;
        let loss = self.model.loss(acts, targets)?;
        if weight == 1.0 {
            self.model.backward(acts, targets, &mut self.grads);
        } else {
            // backward adds d loss / d params; weight it on the way into the shared buffer.
            self.scratch.resize(self.grads.len(), 0.0);
            self.scratch.fill(0.0);
            self.model.backward(acts, targets, &mut self.scratch);
            self.grads
                .iter_mut()
                .zip(&self.scratch)
                .for_each(|(g, s)| *g += weight * s);
        }
        Ok(loss)
    }

    fn evaluate(&mut self, inputs: &[u32], targets: &[u32], shape: BatchShape) -> Result<f32> {
        let i = self.acts_index(shape);
        let acts = &mut self.acts[i];
        self.model.forward(acts, inputs)?;
        Ok(self.model.loss(acts, targets)?)
    }

    fn grad_norm(&mut self) -> f32 {
        global_norm(&self.grads)
    }

    fn adamw_step(&mut self, step: &AdamWStep) {
        adamw_update(
            &mut self.model.params,
            &self.grads,
            &mut self.m,
            &mut self.v,
            step,
        );
    }

    fn params(&self) -> Vec<f32> {
        self.model.params.clone()
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        self.check_len("the parameter buffer", params.len())?;
        self.model.params.copy_from_slice(params);
        Ok(())
    }

    fn optimizer_state(&self) -> (Vec<f32>, Vec<f32>) {
        (self.m.clone(), self.v.clone())
    }

    fn load_optimizer_state(&mut self, m: &[f32], v: &[f32]) -> Result<()> {
        self.check_len("the first moment (m)", m.len())?;
        self.check_len("the second moment (v)", v.len())?;
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        Ok(())
    }
}
